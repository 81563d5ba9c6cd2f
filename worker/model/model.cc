// Model: construction, the planning/binding pass over every component, and the tensor listings.
#include "worker/model/model.h"

#include <algorithm>
#include <cstring>

#include "common/check.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "worker/model/model_impl.h"

namespace shoal::model {

int64_t NamedTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

LossScales MeanLossScales(int64_t global_main_targets, int64_t global_mtp_targets, int64_t mtp_depth,
                          float mtp_lambda, double micro_fraction) {
  LossScales s;
  s.main = global_main_targets > 0 ? static_cast<float>(1.0 / static_cast<double>(global_main_targets)) : 0.f;
  s.mtp = global_mtp_targets > 0 && mtp_depth > 0
              ? static_cast<float>(mtp_lambda / static_cast<double>(mtp_depth) /
                                   static_cast<double>(global_mtp_targets))
              : 0.f;
  s.balance = static_cast<float>(micro_fraction);
  return s;
}

Result<ModelOptions> ResolveModelOptions(const ModelConfig& c, const ModelOptions& options) {
  RETURN_IF_ERROR(c.Validate());
  ModelOptions o = options;
  const int64_t L = c.num_hidden_layers, blocks = c.num_blocks();
  if (o.layer_end < 0) o.layer_end = blocks;
  if (o.expert_end < 0) o.expert_end = c.n_routed_experts;
  auto bad = [](const std::string& m) { return InvalidArgumentError("model options: " + m); };
  if (o.layer_begin < 0 || o.layer_begin >= o.layer_end || o.layer_end > blocks) {
    return bad("layer range [" + std::to_string(o.layer_begin) + ", " + std::to_string(o.layer_end) +
               ") must be a non-empty part of the model's " + std::to_string(blocks) + " layers (" +
               std::to_string(L) + " main + " + std::to_string(c.num_nextn_predict_layers) + " MTP)");
  }
  if (o.has_embedding && o.layer_begin != 0) {
    return bad("has_embedding needs the range to start at layer 0 (it starts at " + std::to_string(o.layer_begin) +
               ")");
  }
  if (o.has_head && (o.layer_end < L || o.layer_begin > L)) {
    return bad("has_head needs the range to reach the last main layer " + std::to_string(L - 1) + " (range [" +
               std::to_string(o.layer_begin) + ", " + std::to_string(o.layer_end) + "))");
  }
  if (o.layer_end > L) {  // MTP layers held
    if (!o.has_head) return bad("MTP layers need the head (has_head): they use model.norm and lm_head");
    if (o.layer_end != blocks) return bad("a stage holding MTP layers holds all of them");
    if (c.num_nextn_predict_layers > 1) {
      return UnimplementedError("model: MTP depth " + std::to_string(c.num_nextn_predict_layers) +
                                " (num_nextn_predict_layers) is not supported; depth 1 is (DeepSeek-V3)");
    }
  }
  if (o.expert_begin < 0 || o.expert_begin >= o.expert_end || o.expert_end > c.n_routed_experts) {
    return bad("expert range [" + std::to_string(o.expert_begin) + ", " + std::to_string(o.expert_end) +
               ") must be a non-empty part of the " + std::to_string(c.n_routed_experts) + " routed experts");
  }
  if (o.max_batch <= 0 || o.max_seq <= 0) {
    return bad("max_batch and max_seq must be positive (got " + std::to_string(o.max_batch) + ", " +
               std::to_string(o.max_seq) + ")");
  }
  if (o.activation_slots < 1 || o.activation_slots > 1024) {
    return bad("activation_slots must be in [1, 1024] (got " + std::to_string(o.activation_slots) + ")");
  }
  if (!(o.ep_capacity_factor >= 0)) {
    return bad("ep_capacity_factor must be >= 0 (0 = the worst case), got " + std::to_string(o.ep_capacity_factor));
  }
  if (o.max_batch * o.max_seq * c.num_experts_per_tok > INT32_MAX) {
    return bad("max_batch·max_seq·num_experts_per_tok exceeds the int32 row indices of the MoE kernels");
  }
  if (c.scoring_func != "sigmoid" || c.topk_method != "noaux_tc" || !c.norm_topk_prob) {
    return UnimplementedError("model: only the DeepSeek-V3 router (scoring_func sigmoid, topk_method noaux_tc, "
                              "norm_topk_prob true) is implemented");
  }
  if (c.qk_head_dim() > 256 || c.v_head_dim > 256) {
    return bad("the attention kernel supports head dims up to 256 (qk " + std::to_string(c.qk_head_dim()) + ", v " +
               std::to_string(c.v_head_dim) + ")");
  }
  if (c.n_routed_experts > 1024 || c.num_experts_per_tok > 64) {
    return bad("the router kernels support up to 1024 experts and top-64");
  }
  return o;
}

std::vector<float> BuildRopeTable(const ModelConfig& c, int64_t positions) {
  const int dr = static_cast<int>(c.qk_rope_head_dim);
  std::vector<float> inv_freq(static_cast<size_t>(dr / 2));
  kernels::YarnConfig yarn;
  const kernels::YarnConfig* yarn_ptr = nullptr;
  if (c.rope_scaling && c.rope_scaling->factor > 1.0) {
    yarn.factor = static_cast<float>(c.rope_scaling->factor);
    yarn.original_max_position = static_cast<int>(c.rope_scaling->original_max_position_embeddings);
    yarn.beta_fast = static_cast<float>(c.rope_scaling->beta_fast);
    yarn.beta_slow = static_cast<float>(c.rope_scaling->beta_slow);
    yarn_ptr = &yarn;
  }
  kernels::rope_inv_freq(inv_freq.data(), dr, static_cast<float>(c.rope_theta), yarn_ptr);
  std::vector<float> table(static_cast<size_t>(positions) * dr);
  kernels::rope_table(table.data(), inv_freq.data(), static_cast<int>(positions), dr);
  // HF's YaRN "attention factor" scales cos and sin (1 for DeepSeek-V3's mscale = mscale_all_dim).
  const double attention_factor = c.yarn_attention_factor();
  if (attention_factor != 1.0) {
    for (float& v : table) v = static_cast<float>(v * attention_factor);
  }
  return table;
}

Model::Model(const ModelConfig& config, const ModelOptions& options)
    : config_(config), options_(options), impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const GemmMode mode = FP8EligibleMode(options_.precision);
  m.head_mode = HighPrecisionMode(options_.precision);
  const int64_t L = config_.num_hidden_layers;
  for (int64_t l = options_.layer_begin; l < std::min(options_.layer_end, L); ++l) {
    m.blocks.push_back(std::make_unique<DecoderBlock>(config_, l, options_.expert_begin, options_.expert_end, mode,
                                                      options_.balance_alpha, options_.ep_capacity_factor));
  }
  if (options_.layer_end > L) {
    m.mtp = std::make_unique<MtpModule>();
    m.mtp->layer = L;
    m.mtp->block = std::make_unique<DecoderBlock>(config_, L, options_.expert_begin, options_.expert_end, mode,
                                                  options_.balance_alpha, options_.ep_capacity_factor);
  }
  auto layout = EpLayoutOf(config_.n_routed_experts, options_.expert_begin, options_.expert_end);
  m.ep_ranges_ok = layout.ok();
  if (layout.ok()) m.ep_layout = *layout;
  m.parked.resize(static_cast<size_t>(options_.activation_slots));
}

Model::~Model() = default;

void MtpModule::Declare(const ModelConfig& c, bool has_embedding, GemmMode mode, LayerPlans& p, BufferPlan& top) {
  const int64_t N = p.max_tokens(), H = c.hidden_size, V = c.vocab_size;
  const std::string pre = LayerPrefix(layer);
  ParamPlan& params = *p.params;
  BufferPlan& saved = *p.saved;
  if (!has_embedding) embed_copy = params.Tensor(pre + "embed_tokens.weight", {V, H});
  enorm = params.Tensor(pre + "enorm.weight", {H});
  hnorm = params.Tensor(pre + "hnorm.weight", {H});
  eh_proj.Declare(pre + "eh_proj", params.Tensor(pre + "eh_proj.weight", {H, 2 * H}), H, 2 * H, {}, mode, *p.cache);
  p.linear_needs->Merge(eh_proj.Needs(N));
  block->Declare(p);
  shared_norm = params.Tensor(pre + "shared_head.norm.weight", {H});
  const std::string s = "mtp.";
  emb = saved.F32(s + "emb", Shape{N, H});
  rstd_e = saved.F32(s + "rstd_e", Shape{N});
  rstd_h = saved.F32(s + "rstd_h", Shape{N});
  cat = saved.F32(s + "cat", Shape{N, 2 * H});
  h_in = saved.F32(s + "h_in", Shape{N, H});
  h_out = saved.F32(s + "h_out", Shape{N, H});
  rstd_sh = saved.F32(s + "rstd_sh", Shape{N});
  z = saved.F32(s + "z", Shape{N, H});
  dz = saved.F32(s + "dz", Shape{N, H});
  g = saved.F32(s + "g", Shape{N, H});
  dcat = saved.F32(s + "dcat", Shape{N, 2 * H});
  norm_out = top.F32(s + "norm_out", Shape{N, H});
  d_half = top.F32(s + "d_half", Shape{N, H});
  d_emb = top.F32(s + "d_emb", Shape{N, H});
}

void Model::Impl::RecordPlan(const ModelRegions& r, bool defer_weight_grads) {
  const int64_t a = kernels::kCpuArenaAlignment;
  storages = r.params.storages();
  cache_specs = r.cache.specs();
  cache_layout = kernels::ComputeArenaLayout(cache_specs, a);
  saved_specs = r.saved.specs();
  saved_layout = kernels::ComputeArenaLayout(saved_specs, a);
  linear_specs = r.linear.specs();
  linear_layout = kernels::ComputeArenaLayout(linear_specs, a);
  scratch_specs.clear();
  scratch_layouts.clear();
  scratch_bytes = 0;
  for (const BufferPlan& s : r.scratch) {
    scratch_specs.push_back(s.specs());
    scratch_layouts.push_back(kernels::ComputeArenaLayout(s.specs(), a));
    scratch_bytes = std::max(scratch_bytes, scratch_layouts.back().total_bytes);
  }
  block_dgrad_specs.clear();
  block_dgrad_layouts.clear();
  dgrad_bytes = 0;
  if (defer_weight_grads) {
    dgrad_specs = r.dgrad_global.specs();
    dgrad_layout = kernels::ComputeArenaLayout(dgrad_specs, a);
    dgrad_bytes = dgrad_layout.total_bytes;
    return;
  }
  for (const BufferPlan& d : r.block_dgrad) {
    block_dgrad_specs.push_back(d.specs());
    block_dgrad_layouts.push_back(kernels::ComputeArenaLayout(d.specs(), a));
    dgrad_bytes = std::max(dgrad_bytes, block_dgrad_layouts.back().total_bytes);
  }
}

// One pass over every component in a fixed order: planning (binding = false) records what each declares; binding
// hands out the same buffers from the allocated arenas. Parameters are declared in Hugging Face order.
void Model::Declare(bool binding) {
  Impl& m = *impl_;
  const int64_t N = options_.max_batch * options_.max_seq, H = config_.hidden_size, V = config_.vocab_size;
  const size_t nb = m.blocks.size(), num_comp = 1 + nb + (m.mtp ? 1 : 0);
  const bool defer = options_.defer_weight_grads;

  ModelRegions r;
  auto region = [&](std::byte* base, const std::vector<TensorSpec>& specs, const kernels::ArenaLayout& layout) {
    return binding ? BufferPlan(base, &specs, &layout) : BufferPlan();
  };
  if (binding) {
    std::vector<float*> storage_w, storage_g;
    int64_t gi = 0;
    for (size_t i = 0; i < m.storages.size(); ++i) {
      storage_w.push_back(m.params->view(static_cast<int64_t>(i)).as<float>());
      storage_g.push_back(m.storages[i].trainable ? m.grads->view(gi++).as<float>() : nullptr);
    }
    r.params = ParamPlan(&m.storages, storage_w, storage_g);
    r.cache = region(static_cast<std::byte*>(m.cache->data()), m.cache_specs, m.cache_layout);
    r.saved = region(m.saved_base, m.saved_specs, m.saved_layout);
    r.dgrad_global = region(m.dgrad_base, m.dgrad_specs, m.dgrad_layout);
  }
  for (size_t i = 0; i < num_comp; ++i) {
    r.scratch.push_back(binding ? region(m.scratch_base, m.scratch_specs[i], m.scratch_layouts[i]) : BufferPlan());
    r.block_dgrad.push_back(binding && !defer ? region(m.dgrad_base, m.block_dgrad_specs[i], m.block_dgrad_layouts[i])
                                              : BufferPlan());
  }
  LinearNeeds needs;
  auto plans_for = [&](size_t comp) {
    LayerPlans p;
    p.params = &r.params;
    p.cache = &r.cache;
    p.saved = &r.saved;
    p.dgrad = defer ? &r.dgrad_global : &r.block_dgrad[comp];
    p.scratch = &r.scratch[comp];
    p.linear_needs = &needs;
    p.max_batch = options_.max_batch;
    p.max_seq = options_.max_seq;
    return p;
  };
  BufferPlan& top = r.scratch[0];

  if (options_.has_embedding) m.embed = r.params.Tensor("model.embed_tokens.weight", {V, H});
  m.hs.assign(nb + 1, nullptr);
  for (size_t i = 0; i <= nb; ++i) m.hs[i] = r.saved.F32("model.hidden." + std::to_string(i), Shape{N, H});
  for (size_t i = 0; i < nb; ++i) {
    LayerPlans p = plans_for(1 + i);
    m.blocks[i]->Declare(p);
  }
  if (m.mtp) {
    LayerPlans p = plans_for(1 + nb);
    m.mtp->Declare(config_, options_.has_embedding, m.head_mode, p, top);
  }
  if (options_.has_head) {
    m.final_norm = r.params.Tensor("model.norm.weight", {H});
    m.head = r.params.Tensor("lm_head.weight", {V, H});
    if (m.head_mode != GemmMode::kFp32) m.head_bf16 = r.cache.F32("lm_head.bf16", Shape{V * H});
    m.rstd_final = r.saved.F32("model.rstd_final", Shape{N});
    m.h0n = r.saved.F32("model.h0n", Shape{N, H});
    m.d_h0n = r.saved.F32("model.d_h0n", Shape{N, H});
    // Cross-entropy chunks of ~8 MB of logits.
    m.ce_chunk = static_cast<int>(std::min<int64_t>(std::clamp<int64_t>((int64_t{1} << 21) / V, 16, 1024), N));
    m.z_round = top.F32("model.z_round", Shape{N, H});
    m.ce_scratch = top.F32("model.ce_scratch", Shape{static_cast<int64_t>(kernels::cross_entropy_scratch_floats(
                                                   static_cast<int>(V), m.ce_chunk))});
    m.ce_row_loss = top.F32("model.ce_row_loss", Shape{m.ce_chunk});
  }
  m.g = r.saved.F32("model.grad", Shape{N, H});
  m.default_positions = r.saved.I32("model.default_positions", Shape{N});
  m.rms_scratch = top.F32("model.rms_scratch", Shape{static_cast<int64_t>(kernels::rmsnorm_backward_scratch_floats(
                                                   static_cast<int>(N), static_cast<int>(H)))});

  m.linear_needs = needs;
  if (binding) r.linear = region(m.linear_base, m.linear_specs, m.linear_layout);
  m.linear.Declare(r.linear, needs);
  if (!binding) m.RecordPlan(r, defer);
}

namespace {

int64_t StorageElems(const std::vector<ParamStorage>& storages, bool trainable_only) {
  int64_t n = 0;
  for (const ParamStorage& s : storages) {
    if (!trainable_only || s.trainable) n += s.numel;
  }
  return n;
}

}  // namespace

Result<MemoryPlan> PlanMemory(const ModelConfig& config, const ModelOptions& options) {
  ASSIGN_OR_RETURN(ModelOptions resolved, ResolveModelOptions(config, options));
  std::unique_ptr<Model> model(new Model(config, resolved));
  model->Declare(/*binding=*/false);
  const Model::Impl& m = *model->impl_;
  const int64_t a = kernels::kCpuArenaAlignment;
  MemoryPlan plan;
  plan.params = StorageElems(m.storages, false);
  plan.trainable = StorageElems(m.storages, true);
  plan.param_bytes = kernels::ComputeArenaLayout(ParamArenaSpecs(m.storages), a).total_bytes;
  plan.grad_bytes = kernels::ComputeArenaLayout(GradArenaSpecs(m.storages), a).total_bytes;
  plan.optimizer_bytes = 4 * plan.trainable;
  plan.weight_cache_bytes = m.cache_layout.total_bytes;
  const int64_t saved = m.saved_layout.total_bytes, dgrad = kernels::AlignUp(m.dgrad_bytes, a),
                shared = kernels::AlignUp(m.scratch_bytes, a) + m.linear_layout.total_bytes;
  plan.activation_bytes_per_microbatch = saved + dgrad + shared;
  plan.activation_slot_bytes = saved + (resolved.defer_weight_grads ? dgrad : 0);
  plan.activation_bytes = shared + (resolved.defer_weight_grads ? 0 : dgrad) +
                          resolved.activation_slots * plan.activation_slot_bytes;
  return plan;
}

Result<std::unique_ptr<Model>> Model::Create(const ModelConfig& config, const ModelOptions& options) {
  ASSIGN_OR_RETURN(ModelOptions resolved, ResolveModelOptions(config, options));
  std::unique_ptr<Model> model(new Model(config, resolved));
  Impl& m = *model->impl_;
  model->Declare(/*binding=*/false);

  kernels::DeviceAllocator& alloc = kernels::CpuAllocator();
  ASSIGN_OR_RETURN(m.params, kernels::Arena::Create(ParamArenaSpecs(m.storages), alloc));
  ASSIGN_OR_RETURN(m.grads, kernels::Arena::Create(GradArenaSpecs(m.storages), alloc));
  ASSIGN_OR_RETURN(m.cache, kernels::Arena::Create(m.cache_specs, alloc));
  // Activations: scratch and the Linear workspace once, the saved region (and with deferred weight gradients the
  // dgrad region) once per slot.
  using kernels::DType;
  const int64_t slots = resolved.activation_slots;
  const int64_t dgrad_copies = resolved.defer_weight_grads ? slots : 1;
  std::vector<TensorSpec> act_specs = {
      {"scratch", DType::kF8E4M3, Shape{m.scratch_bytes}},
      {"linear", DType::kF8E4M3, Shape{m.linear_layout.total_bytes}},
  };
  for (int64_t i = 0; i < slots; ++i) {
    act_specs.push_back({"saved." + std::to_string(i), DType::kF8E4M3, Shape{m.saved_layout.total_bytes}});
  }
  for (int64_t i = 0; i < dgrad_copies; ++i) {
    act_specs.push_back({"dgrad." + std::to_string(i), DType::kF8E4M3, Shape{m.dgrad_bytes}});
  }
  ASSIGN_OR_RETURN(m.acts, kernels::Arena::Create(act_specs, alloc));
  RETURN_IF_ERROR(m.params->Zero());
  RETURN_IF_ERROR(m.grads->Zero());
  RETURN_IF_ERROR(m.cache->Zero());
  RETURN_IF_ERROR(m.acts->Zero());
  m.scratch_base = static_cast<std::byte*>(m.acts->view(0).data);
  m.linear_base = static_cast<std::byte*>(m.acts->view(1).data);
  for (int64_t i = 0; i < slots; ++i) m.saved_bases.push_back(static_cast<std::byte*>(m.acts->view(2 + i).data));
  for (int64_t i = 0; i < slots; ++i) {
    m.dgrad_bases.push_back(static_cast<std::byte*>(m.acts->view(2 + slots + (dgrad_copies > 1 ? i : 0)).data));
  }
  m.saved_base = m.saved_bases[0];
  m.dgrad_base = m.dgrad_bases[0];
  model->Declare(/*binding=*/true);

  for (const ParamStorage& s : m.storages) {
    for (const ParamPart& p : s.parts) m.trainable[p.name] = s.trainable;
  }
  // RoPE table (§2.3-2.4): positions up to max(max_position_embeddings, max_seq).
  m.rope_positions = std::max<int64_t>(model->config_.max_position_embeddings, resolved.max_seq);
  m.rope = BuildRopeTable(model->config_, m.rope_positions);
  for (int64_t b = 0; b < resolved.max_batch; ++b) {
    for (int64_t t = 0; t < resolved.max_seq; ++t) m.default_positions[b * resolved.max_seq + t] = static_cast<int32_t>(t);
  }
  return model;
}

std::vector<NamedTensor> Model::Parameters() {
  std::vector<NamedTensor> out;
  for (size_t i = 0; i < impl_->storages.size(); ++i) {
    const ParamStorage& s = impl_->storages[i];
    float* base = impl_->params->view(static_cast<int64_t>(i)).as<float>();
    for (const ParamPart& p : s.parts) out.push_back({p.name, kernels::DType::kF32, p.shape, base + p.offset});
  }
  return out;
}

std::vector<NamedTensor> Model::Gradients() {
  std::vector<NamedTensor> out;
  int64_t gi = 0;
  for (const ParamStorage& s : impl_->storages) {
    if (!s.trainable) continue;
    float* base = impl_->grads->view(gi++).as<float>();
    for (const ParamPart& p : s.parts) out.push_back({p.name, kernels::DType::kF32, p.shape, base + p.offset});
  }
  return out;
}

bool Model::IsTrainable(const std::string& name) const {
  auto it = impl_->trainable.find(name);
  return it != impl_->trainable.end() && it->second;
}

std::vector<NamedTensor> Model::HfTensors() {
  std::vector<NamedTensor> out = Parameters();
  const Impl& m = *impl_;
  if (m.mtp) {
    const std::string pre = LayerPrefix(m.mtp->layer);
    const int64_t V = config_.vocab_size, H = config_.hidden_size;
    if (options_.has_embedding) out.push_back({pre + "embed_tokens.weight", kernels::DType::kF32, {V, H}, m.embed.w});
    out.push_back({pre + "shared_head.head.weight", kernels::DType::kF32, {V, H}, m.head.w});
  }
  return out;
}

void Model::ZeroGrad() { impl_->grads->Zero().IgnoreError(); }

void Model::ZeroLoads() {
  for (auto& b : impl_->blocks) {
    if (b->moe()) b->moe()->ZeroLoads();
  }
  if (impl_->mtp) impl_->mtp->block->moe()->ZeroLoads();
}

std::vector<std::pair<int64_t, std::vector<int32_t>>> Model::Loads() const {
  std::vector<std::pair<int64_t, std::vector<int32_t>>> out;
  for (const auto& b : impl_->blocks) {
    if (b->moe()) out.emplace_back(b->layer_idx(), b->moe()->loads());
  }
  if (impl_->mtp) out.emplace_back(impl_->mtp->layer, impl_->mtp->block->moe()->loads());
  return out;
}

Status Model::SetLoads(int64_t layer, const std::vector<int32_t>& loads) {
  auto set = [&](DecoderBlock& b) -> Status {
    if (loads.size() != static_cast<size_t>(config_.n_routed_experts)) {
      return InvalidArgumentError("SetLoads: layer " + std::to_string(layer) + " has " +
                                  std::to_string(config_.n_routed_experts) + " experts, got " +
                                  std::to_string(loads.size()) + " loads");
    }
    b.moe()->SetLoads(loads);
    return Status::OK();
  };
  for (auto& b : impl_->blocks) {
    if (b->layer_idx() == layer && b->moe()) return set(*b);
  }
  if (impl_->mtp && impl_->mtp->layer == layer) return set(*impl_->mtp->block);
  return InvalidArgumentError("SetLoads: layer " + std::to_string(layer) + " is not a MoE layer of this model");
}

void Model::UpdateBias(float gamma) {
  for (auto& b : impl_->blocks) {
    if (b->moe()) b->moe()->UpdateBias(gamma);
  }
  if (impl_->mtp) impl_->mtp->block->moe()->UpdateBias(gamma);
}

std::vector<RoutingView> Model::LastRouting() const {
  std::vector<RoutingView> out;
  const int64_t N = impl_->ctx.N;
  auto add = [&](const DecoderBlock& b) {
    const MoeFfn* moe = b.moe();
    out.push_back({b.layer_idx(), N, config_.num_experts_per_tok, moe->topk_idx(), moe->topk_weight(),
                   moe->scores(), moe->balance_loss()});
  };
  for (const auto& b : impl_->blocks) {
    if (b->moe()) add(*b);
  }
  if (impl_->mtp && impl_->ran_mtp) add(*impl_->mtp->block);
  return out;
}

void Model::SetActivationSlot(int slot) {
  Impl& m = *impl_;
  CHECK(slot >= 0 && slot < options_.activation_slots)
      << "SetActivationSlot(" << slot << "): the model has " << options_.activation_slots << " activation slots";
  if (slot == m.slot) return;
  m.parked[m.slot] = {m.ctx, m.have_forward, m.ran_mtp};
  m.slot = slot;
  m.saved_base = m.saved_bases[slot];
  m.dgrad_base = m.dgrad_bases[slot];
  Declare(/*binding=*/true);  // every layer's views now point into this slot's regions
  const Impl::SlotState& st = m.parked[slot];
  m.ctx = st.ctx;
  m.have_forward = st.have_forward;
  m.ran_mtp = st.ran_mtp;
}

int Model::activation_slot() const { return impl_->slot; }

Status Model::SetExpertExchange(ExpertExchange* exchange) {
  Impl& m = *impl_;
  if (exchange != nullptr) {
    ASSIGN_OR_RETURN(EpLayout layout,
                     EpLayoutOf(config_.n_routed_experts, options_.expert_begin, options_.expert_end));
    if (exchange->size() != layout.size || exchange->rank() != layout.rank) {
      return InvalidArgumentError("SetExpertExchange: the exchange is EP rank " + std::to_string(exchange->rank()) +
                                  " of " + std::to_string(exchange->size()) + ", but experts [" +
                                  std::to_string(options_.expert_begin) + ", " + std::to_string(options_.expert_end) +
                                  ") of " + std::to_string(config_.n_routed_experts) + " are EP rank " +
                                  std::to_string(layout.rank) + " of " + std::to_string(layout.size));
    }
  }
  m.exchange = exchange;
  for (auto& b : m.blocks) {
    if (b->moe()) b->moe()->SetExchange(exchange);
  }
  if (m.mtp) m.mtp->block->moe()->SetExchange(exchange);
  return Status::OK();
}

EpLayout Model::ep_layout() const {
  const Impl& m = *impl_;
  if (m.ep_ranges_ok) return m.ep_layout;
  const int64_t n = options_.expert_end - options_.expert_begin;
  return EpLayout{(config_.n_routed_experts + n - 1) / n, options_.expert_begin / n, n};
}

size_t Model::ActivationBytes() const { return static_cast<size_t>(impl_->acts->bytes()); }

size_t Model::ParameterCount() const { return static_cast<size_t>(StorageElems(impl_->storages, false)); }

}  // namespace shoal::model
