// AdamW with fp32 master weights and bf16 moments; fast CPU version (elementwise, memory-bound).
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace shoal::kernels {

// One step (step ≥ 1 counts updates, for the bias correction), per element:
//   m' = β1·m + (1−β1)·g,  v' = β2·v + (1−β2)·g²               (fp32, from the stored bf16 m, v)
//   θ ← θ − lr·wd·θ  (decoupled weight decay),  θ ← θ − lr·(m'/(1−β1^step)) / (sqrt(v'/(1−β2^step)) + eps)
//   m, v ← bf16(m'), bf16(v')  (round to nearest even)
// The parameter update uses the fp32 m', v' of this step; only the stored moments are rounded.
void adamw_update(float* param /*[n]*/, bf16_t* m /*[n]*/, bf16_t* v /*[n]*/, const float* grad /*[n]*/, int64_t n,
                  int step, float lr, float beta1, float beta2, float eps, float weight_decay);

}  // namespace shoal::kernels
