// Cross-entropy fused with the output projection (lm_head); fast CPU version.
// Tokens are processed in chunks of `chunk_rows`: only a [chunk_rows, V] block of logits ever exists (in the
// caller's scratch), so no [N, V] probability tensor is kept. GEMMs go to OpenBLAS (cblas_sgemm, its own
// threads); the softmax rows run on ThreadPool::Default() between GEMMs (never both at once).
// Shapes: N = tokens, C = channels, V = vocab. targets: [N] int32, −1 = ignored (no loss, no gradient).
#pragma once

#include <cstddef>
#include <cstdint>

namespace shoal::kernels {

// Floats of scratch both functions need: chunk_rows · V.
size_t cross_entropy_scratch_floats(int V, int chunk_rows);

// loss_n = logsumexp(z_n·Wᵀ) − (z_n·Wᵀ)[target_n] (max-subtracted). Returns Σ_n loss_n over non-ignored
// tokens, UNSCALED (divide by the number of valid tokens to log a mean), and accumulates the gradient of
// loss_scale · Σ_n loss_n:  dz += loss_scale·(softmax − onehot)·W,  dW += loss_scale·(softmax − onehot)ᵀ·z.
// token_loss (optional) receives loss_n (0 for ignored tokens). dz or dW may be null (that gradient is skipped).
// Targets must be in [−1, V).
double cross_entropy_forward_backward(float* dz /*[N,C] += |null*/, float* dW /*[V,C] += |null*/,
                                      float* token_loss /*[N]|null*/,
                                      float* scratch /*[chunk_rows·V]*/, const float* z /*[N,C]*/,
                                      const float* W /*[V,C]*/, const int32_t* targets /*[N]*/, int N, int C, int V,
                                      int chunk_rows, float loss_scale);

// Forward only (eval / generation). If logits is non-null it receives all [N,V] logits (then scratch may be
// null); token_loss (optional) receives loss_n. targets may be null (no loss; returns 0).
double cross_entropy_forward(float* logits /*[N,V] | null*/, float* token_loss /*[N] | null*/,
                             float* scratch /*[chunk_rows·V] | null*/, const float* z /*[N,C]*/,
                             const float* W /*[V,C]*/, const int32_t* targets /*[N] | null*/, int N, int C, int V,
                             int chunk_rows);

}  // namespace shoal::kernels
