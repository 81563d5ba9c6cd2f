// RMSNorm with fp32 statistics (spec §1.1; backward per Appendix A); fast CPU version.
// Shapes: N = rows (tokens), C = channels. Reference twin: kernels/cpu/ops_ref.h; CUDA: kernels/cuda/ops.h.
#pragma once

#include <cstddef>

namespace shoal::kernels {

// out = x · rstd ⊙ w with rstd = (mean(x²) + eps)^-1/2 per row (saved for the backward). out may equal x.
void rmsnorm_forward(float* out /*[N,C]*/, float* rstd /*[N]*/, const float* x /*[N,C]*/, const float* w /*[C]*/,
                     int N, int C, float eps);

// Floats of scratch rmsnorm_backward needs (per-chunk partial dw; the chunking is fixed, so dw is
// deterministic whatever the thread count).
size_t rmsnorm_backward_scratch_floats(int N, int C);

// dx += r·ĝ − (r³/C)·x·Σ(ĝ⊙x) with ĝ = w⊙dout;  dw += Σ_rows dout⊙x·r.  dx must not alias dout or x.
void rmsnorm_backward(float* dx /*[N,C] +=*/, float* dw /*[C] +=*/, float* scratch /*[scratch_floats]*/,
                      const float* dout /*[N,C]*/, const float* rstd /*[N]*/, const float* x /*[N,C]*/,
                      const float* w /*[C]*/, int N, int C);

}  // namespace shoal::kernels
