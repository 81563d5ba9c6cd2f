// FP8 GEMM emulation on the CPU with DeepSeek-V3's increased-precision accumulation
// (../shared/reference/deepseek-v3.md §5.3): the reduction dim K is cut into blocks of 128, and for each
// block kb
//     acc[m,n] += ( Σ_{k∈kb} qa[m,k]·qb[n,k] ) · sa(m,kb) · sb(n,kb)         acc in fp32
// where sa/sb are the scales of the tiles holding those elements (1×128 activations, 128×128 weights,
// 128×1 for Wgrad operands, or one per tensor). The inner sum runs in fp32 here: E4M3×E4M3 products are
// exact in fp32 and only the additions round, so this is an upper bound on the accuracy of the H800 recipe
// (whose tensor cores keep ~14 bits inside a block). fp8_gemm_reference models that accumulator.
//
// Speed: each 256×256 output tile decodes its 128-wide K slices of A and B to fp32 (exact, no scaling),
// multiplies them with single-threaded sgemm and folds the partial product in with both scales; tiles are
// spread over the pool (policy (b) in kernels/cpu/blas.h).
#pragma once

#include <cstdint>

#include "common/thread_pool.h"
#include "kernels/fp8.h"

namespace shoal::kernels::cpu {

// out[M,N] = op(A)·op(B) (or += with accumulate), op(X) = X or Xᵀ. A is stored [M,K] (or [K,M] when
// trans_a), B is stored [K,N] (or [N,K] when trans_b). Each operand's tile extent along K must be a multiple
// of 128 or cover all of K (per-tensor); its extent along M/N is free (1, 128, all).
void fp8_gemm(float* out, const Fp8Matrix& a, bool trans_a, const Fp8Matrix& b, bool trans_b, bool accumulate,
              ThreadPool* pool = nullptr);

// Linear layer y = x·Wᵀ in FP8 (weights [OC, C]):
//   out[N,OC] = inp[N,C] (1×128 tiles) · weight[OC,C]ᵀ (128×128 blocks)
void fp8_matmul_forward(float* out, const Fp8Matrix& inp, const Fp8Matrix& weight, ThreadPool* pool = nullptr);
// Accumulates (+=); either output may be null.
//   dinp[N,C]     += dout[N,OC] (1×128 tiles along OC) · weight[OC,C] (128×128 blocks)     Dgrad
//   dweight[OC,C] += dout[N,OC]ᵀ (128×1 tiles) · inp[N,C] (128×1 tiles)                    Wgrad
void fp8_matmul_backward(float* dinp, float* dweight, const Fp8Matrix& dout_1x128, const Fp8Matrix& dout_128x1,
                         const Fp8Matrix& inp_128x1, const Fp8Matrix& weight, ThreadPool* pool = nullptr);

// Slow scalar model of a limited-precision tensor-core accumulator, for tests and error reports. Every
// product qa·qb (exact) is added to a partial sum that is truncated toward zero to `mantissa_bits` explicit
// mantissa bits after each addition. promote = true: every 128 elements of K the partial sum is multiplied
// by both scales and added to an fp32 accumulator (§5.3). promote = false: each product is scaled first and
// the whole K goes through the one limited accumulator. mantissa_bits = 23 is plain fp32.
void fp8_gemm_reference(float* out, const Fp8Matrix& a, bool trans_a, const Fp8Matrix& b, bool trans_b,
                        int mantissa_bits, bool promote);

}  // namespace shoal::kernels::cpu
