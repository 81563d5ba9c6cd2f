// Global-norm gradient clipping over a list of fp32 buffers; fast CPU version.
// Typical use: s = clip_scale(global_norm(bufs, sizes, n), max_norm); scale_buffers(bufs, sizes, n, s).
#pragma once

#include <cstdint>

namespace shoal::kernels {

// sqrt(Σ_buffers Σ_i x²), accumulated in fp64. Deterministic (fixed chunking, ordered partial sums).
double global_norm(const float* const* bufs, const int64_t* sizes, int num_bufs);
// min(1, max_norm / (norm + 1e-6)).
float clip_scale(double norm, float max_norm);
// x *= scale for every element of every buffer (no-op when scale == 1).
void scale_buffers(float* const* bufs, const int64_t* sizes, int num_bufs, float scale);
// The three above in one call; returns the norm before clipping.
double clip_grad_norm(float* const* bufs, const int64_t* sizes, int num_bufs, float max_norm);

}  // namespace shoal::kernels
