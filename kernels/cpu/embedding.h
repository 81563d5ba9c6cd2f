// Token embedding lookup and its backward (scatter-add into the table); fast CPU version.
// Shapes: N = tokens, C = channels, V = vocab. Reference twin: kernels/cpu/ops_ref.h; CUDA: kernels/cuda/ops.h.
#pragma once

#include <cstdint>

namespace shoal::kernels {

// out[n,:] = table[tokens[n],:]. Every token must be in [0, V).
void embedding_forward(float* out /*[N,C]*/, const int32_t* tokens /*[N]*/, const float* table /*[V,C]*/, int N,
                       int C, int V);
// dtable[tokens[n],:] += dout[n,:]. Deterministic: threads split the C columns, tokens are summed in order.
void embedding_backward(float* dtable /*[V,C] +=*/, const float* dout /*[N,C]*/, const int32_t* tokens /*[N]*/,
                        int N, int C, int V);

}  // namespace shoal::kernels
