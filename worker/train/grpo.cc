#include "worker/train/grpo.h"

namespace shoal::train {

Status RunGrpo(GrpoContext& ctx, size_t phase_index, int64_t start_step, const std::optional<std::string>& cursor_json,
               AdamW& optimizer, const std::atomic<bool>& stop, const CheckpointFn& checkpoint) {
  return UnimplementedError("GRPO phases are not implemented yet (phase '" +
                            ctx.config.spec.phases[phase_index].name + "')");
}

}  // namespace shoal::train
