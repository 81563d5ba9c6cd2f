// Host API of the CUDA twins of the model ops (kernels/cpu/<op>.h and kernels/cpu/ops_ref.h hold the CPU
// versions and the exact semantics; every function here computes the same thing on device memory).
//
// Conventions (same as the CPU ops): arguments are outputs, saved activations, inputs and weights, dims,
// scalars, then the stream; all pointers are device pointers unless marked "host"; work is only enqueued on
// `stream`: nothing allocates, creates streams or synchronises, and launch errors surface through
// cudaGetLastError / the stream as usual. Backward kernels ACCUMULATE (+=) into every gradient output,
// except rope_backward, which overwrites (and may run in place). Functions with scratch have a
// *_scratch_* size function; scratch is device memory owned by the caller.
// Shapes: N = tokens = B·T, C = channels, NH = heads, Dqk/Dv = head dims, D = rotary dim, E = experts,
// K = experts per token, G = expert groups, V = vocab, I = intermediate size.
//
// Determinism: everything is run-to-run deterministic except embedding_backward (fp32 atomics when tokens
// repeat) and global_norm_squared (fp64 atomics across blocks).
//
// This header needs no CUDA headers: the stream and cuBLASLt context types are forward-declared.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/status.h"
#include "kernels/dtype.h"

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;  // identical to the CUDA runtime's typedef

namespace shoal::kernels::cuda {

class BlasContext;  // kernels/cuda/gemm.h (cuBLASLt handle + workspace)

// ---- embedding
void embedding_forward(float* out /*[N,C]*/, const int32_t* tokens /*[N]*/, const float* table /*[V,C]*/, int N,
                       int C, int V, cudaStream_t stream);
void embedding_backward(float* dtable /*[V,C] +=*/, const float* dout /*[N,C]*/, const int32_t* tokens /*[N]*/,
                        int N, int C, int V, cudaStream_t stream);

// ---- RMSNorm
void rmsnorm_forward(float* out /*[N,C]*/, float* rstd /*[N]*/, const float* x /*[N,C]*/, const float* w /*[C]*/,
                     int N, int C, float eps, cudaStream_t stream);
size_t rmsnorm_backward_scratch_floats(int N, int C);
void rmsnorm_backward(float* dx /*[N,C] +=*/, float* dw /*[C] +=*/, float* scratch, const float* dout /*[N,C]*/,
                      const float* rstd /*[N]*/, const float* x /*[N,C]*/, const float* w /*[C]*/, int N, int C,
                      cudaStream_t stream);

// ---- RoPE (tables from kernels::rope_table, copied to the device; layout [N,NH,D] with head stride ld)
void rope_forward(float* out, const float* x, const int32_t* pos /*[N]*/, const float* cos_sin /*[P,D/2,2]*/, int N,
                  int NH, int D, int ld, cudaStream_t stream);
void rope_backward(float* dx /*= (overwrite)*/, const float* dout, const int32_t* pos /*[N]*/,
                   const float* cos_sin /*[P,D/2,2]*/, int N, int NH, int D, int ld, cudaStream_t stream);

// ---- causal attention (Dqk, Dv ≤ 256)
void attention_forward(float* out /*[B,T,NH,Dv]*/, float* lse /*[B,NH,T]*/, const float* q /*[B,T,NH,Dqk]*/,
                       const float* k /*[B,T,NH,Dqk]*/, const float* v /*[B,T,NH,Dv]*/,
                       const int32_t* seg /*[B,T] | null*/, int B, int T, int NH, int Dqk, int Dv, float scale,
                       cudaStream_t stream);
size_t attention_backward_scratch_floats(int B, int T, int NH);  // D_i = ⟨dout_i, out_i⟩ per row
void attention_backward(float* dq /*+=*/, float* dk /*+=*/, float* dv /*+=*/, float* scratch,
                        const float* dout /*[B,T,NH,Dv]*/, const float* out, const float* lse /*[B,NH,T]*/,
                        const float* q, const float* k, const float* v, const int32_t* seg /*[B,T] | null*/, int B,
                        int T, int NH, int Dqk, int Dv, float scale, cudaStream_t stream);

// ---- SwiGLU on a fused [N, 2I] gate|up buffer
void swiglu_forward(float* out /*[N,I]*/, const float* gate_up /*[N,2I]*/, int N, int I, cudaStream_t stream);
void swiglu_backward(float* dgate_up /*[N,2I] +=*/, const float* dout /*[N,I]*/, const float* gate_up, int N, int I,
                     cudaStream_t stream);

// ---- MoE router (E ≤ 1024, K ≤ 64)
void router_forward(float* scores /*[N,E]*/, int32_t* topk_idx /*[N,K]*/, float* topk_weight /*[N,K]*/,
                    const float* logits /*[N,E]*/, const float* bias /*[E] | null*/, int N, int E, int K, int G,
                    int topk_group, float routed_scale, cudaStream_t stream);
void router_backward(float* dlogits /*[N,E] +=*/, const float* dweight /*[N,K]*/, const float* scores /*[N,E]*/,
                     const int32_t* topk_idx /*[N,K]*/, int N, int E, int K, float routed_scale,
                     cudaStream_t stream);
size_t router_balance_loss_scratch_floats(int B, int T);
// *loss = mean over sequences (overwritten, device scalar); dlogits (may be null) += grad_scale·dL/dlogits.
void router_balance_loss(float* loss /*[1]*/, float* dlogits /*[N,E] += | null*/, float* scratch,
                         const float* scores /*[N,E]*/, int B, int T, int E, int K, float alpha, float grad_scale,
                         cudaStream_t stream);
void router_count_loads(int32_t* loads /*[E] +=*/, const int32_t* topk_idx /*[N,K]*/, int N, int K, int E,
                        cudaStream_t stream);
void router_update_bias(float* bias /*[E]*/, const int32_t* loads /*[E]*/, int E, float gamma, cudaStream_t stream);

// ---- token permutation
size_t moe_permute_plan_scratch_ints(int N, int K, int E);
void moe_permute_plan(int32_t* expert_offsets /*[E+1]*/, int32_t* sorted_rows /*[N·K]*/, int32_t* row_pos /*[N·K]*/,
                      int32_t* scratch, const int32_t* topk_idx /*[N,K]*/, int N, int K, int E, cudaStream_t stream);
void moe_permute_forward(float* xs /*[N·K,C]*/, const float* x /*[N,C]*/, const int32_t* sorted_rows, int N, int K,
                         int C, cudaStream_t stream);
void moe_permute_backward(float* dx /*[N,C] +=*/, const float* dxs /*[N·K,C]*/, const int32_t* row_pos, int N, int K,
                          int C, cudaStream_t stream);
void moe_unpermute_forward(float* out /*[N,C] +=*/, const float* ys /*[N·K,C]*/, const float* weight /*[N,K]*/,
                           const int32_t* row_pos, int N, int K, int C, cudaStream_t stream);
void moe_unpermute_backward(float* dys /*[N·K,C] +=*/, float* dweight /*[N,K] +=*/, const float* dout /*[N,C]*/,
                            const float* ys, const float* weight, const int32_t* row_pos, int N, int K, int C,
                            cudaStream_t stream);

// ---- cross-entropy fused with the output projection (GEMMs through cuBLASLt in true fp32)
// token_loss [N] receives loss_n (0 for ignored targets); *loss_sum (device scalar, may be null) is
// overwritten with Σ_n loss_n, unscaled. Gradients as the CPU version: dz, dW += of loss_scale·Σ loss_n
// (either may be null). Returns a non-OK Status only when a cuBLASLt call fails.
size_t cross_entropy_scratch_floats(int V, int chunk_rows);
Status cross_entropy_forward_backward(BlasContext& blas, float* dz /*[N,C] += | null*/, float* dW /*[V,C] += | null*/,
                                      float* token_loss /*[N]*/, float* loss_sum /*[1] | null*/, float* scratch,
                                      const float* z /*[N,C]*/, const float* W /*[V,C]*/,
                                      const int32_t* targets /*[N]*/, int N, int C, int V, int chunk_rows,
                                      float loss_scale, cudaStream_t stream);
// logits (may be null, then scratch is used chunk by chunk) receives [N,V]; targets may be null (no loss).
Status cross_entropy_forward(BlasContext& blas, float* logits /*[N,V] | null*/, float* token_loss /*[N] | null*/,
                             float* loss_sum /*[1] | null*/, float* scratch, const float* z, const float* W,
                             const int32_t* targets /*[N] | null*/, int N, int C, int V, int chunk_rows,
                             cudaStream_t stream);

// ---- optimizer
void adamw_update(float* param, bf16_t* m, bf16_t* v, const float* grad, int64_t n, int step, float lr, float beta1,
                  float beta2, float eps, float weight_decay, cudaStream_t stream);

// ---- global-norm clipping: zero *sumsq (cudaMemsetAsync), accumulate every buffer, then clip.
// bufs and sizes are HOST arrays of device pointers / element counts.
void global_norm_squared(double* sumsq /*[1] +=*/, const float* const* bufs, const int64_t* sizes, int num_bufs,
                         cudaStream_t stream);
// x *= min(1, max_norm / (sqrt(*sumsq) + 1e-6)), the factor computed on the device (no host round trip).
void clip_by_global_norm(float* const* bufs, const int64_t* sizes, int num_bufs, const double* sumsq,
                         float max_norm, cudaStream_t stream);

}  // namespace shoal::kernels::cuda
