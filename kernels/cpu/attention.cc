#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/check.h"
#include "common/thread_pool.h"
#include "kernels/cpu/ops_simd.h"

namespace shoal::kernels {
namespace {

using simd::kW;
using simd::load;
using simd::store;
using simd::vf16;
using simd::vi16;

constexpr int kB = 32;       // query and key tile size (two vectors of keys)
constexpr int kMaxD = 256;   // Dqk, Dv limit (stack tiles)

int round_up16(int x) { return (x + kW - 1) / kW * kW; }

// ---- micro-kernels ------------------------------------------------------------------------------------
// S[r][0..32) = Σ_d a[r·lda + d] · bt[d·32 + 0..32) for R rows (bt is a transposed, zero-padded tile).
template <int R>
SHOAL_INLINE void mk_nt(float* S, const float* a, int64_t lda, const float* bt, int D) {
  vf16 acc[R][2];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = vf16{};
  for (int d = 0; d < D; ++d) {
    const vf16 b0 = load(bt + d * kB), b1 = load(bt + d * kB + kW);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float x = a[r * lda + d];
      acc[r][0] += x * b0;
      acc[r][1] += x * b1;
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    store(S + r * kB, acc[r][0]);
    store(S + r * kB + kW, acc[r][1]);
  }
}

SHOAL_INLINE void gemm_nt(float* S, int rows, const float* a, int64_t lda, const float* bt, int D) {
  int r = 0;
  for (; r + 4 <= rows; r += 4) mk_nt<4>(S + r * kB, a + r * lda, lda, bt, D);
  for (; r < rows; ++r) mk_nt<1>(S + r * kB, a + r * lda, lda, bt, D);
}

// acc[r·ldc + 0..16·NV) += Σ_j w[r·wr + j·wj] · rows[j·ldr + 0..16·NV) for R rows, J terms.
template <int R, int NV>
SHOAL_INLINE void mk_acc(float* c, int64_t ldc, const float* w, int64_t wr, int64_t wj, const float* rows,
                         int64_t ldr, int J) {
  vf16 acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int x = 0; x < NV; ++x) acc[r][x] = load(c + r * ldc + x * kW);
  for (int j = 0; j < J; ++j) {
    vf16 b[NV];
#pragma GCC unroll 4
    for (int x = 0; x < NV; ++x) b[x] = load(rows + j * ldr + x * kW);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float s = w[r * wr + j * wj];
#pragma GCC unroll 4
      for (int x = 0; x < NV; ++x) acc[r][x] += s * b[x];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int x = 0; x < NV; ++x) store(c + r * ldc + x * kW, acc[r][x]);
}

template <int R>
SHOAL_INLINE void mk_acc_nv(int nv, float* c, int64_t ldc, const float* w, int64_t wr, int64_t wj, const float* rows,
                            int64_t ldr, int J) {
  switch (nv) {
    case 4: mk_acc<R, 4>(c, ldc, w, wr, wj, rows, ldr, J); break;
    case 3: mk_acc<R, 3>(c, ldc, w, wr, wj, rows, ldr, J); break;
    case 2: mk_acc<R, 2>(c, ldc, w, wr, wj, rows, ldr, J); break;
    default: mk_acc<R, 1>(c, ldc, w, wr, wj, rows, ldr, J); break;
  }
}

// C[num_rows, Np] += W[num_rows, J] · Rows[J, Np]; W element (r, j) at w[r·wr + j·wj]; Np multiple of 16.
SHOAL_INLINE void gemm_acc(float* c, int64_t ldc, int num_rows, const float* w, int64_t wr, int64_t wj,
                           const float* rows, int64_t ldr, int J, int Np) {
  for (int c0 = 0; c0 < Np; c0 += 4 * kW) {
    const int nv = std::min(4, (Np - c0) / kW);
    int r = 0;
    for (; r + 4 <= num_rows; r += 4)
      mk_acc_nv<4>(nv, c + r * ldc + c0, ldc, w + r * wr, wr, wj, rows + c0, ldr, J);
    for (; r < num_rows; ++r) mk_acc_nv<1>(nv, c + r * ldc + c0, ldc, w + r * wr, wr, wj, rows + c0, ldr, J);
  }
}

// ---- packing ------------------------------------------------------------------------------------------
// bt[d·32 + jj] = src row jj [d] for jj < nk, zero beyond: 16×16 blocks transposed in registers.
SHOAL_INLINE void pack_t(float* bt, const float* src, int64_t ld, int nk, int D) {
  for (int jb = 0; jb < kB; jb += kW) {
    for (int d0 = 0; d0 < D; d0 += kW) {
      const int nd = std::min(kW, D - d0);
      vf16 r[kW];
#pragma GCC unroll 16
      for (int i = 0; i < kW; ++i) {
        const float* row = src + (jb + i) * ld + d0;
        r[i] = jb + i >= nk ? vf16{} : nd == kW ? load(row) : simd::load_n(row, nd);
      }
      simd::transpose16(r);
#pragma GCC unroll 16
      for (int x = 0; x < kW; ++x)
        if (x < nd) store(bt + (d0 + x) * kB + jb, r[x]);
    }
  }
}
// dst[r·Dp + d] = src row r [d] for r < n, d < D; zero padding to Dp columns and to kB rows.
SHOAL_INLINE void pack_rows(float* dst, const float* src, int64_t ld, int n, int D, int Dp) {
  for (int r = 0; r < kB; ++r) {
    float* o = dst + r * Dp;
    if (r < n) {
      const float* row = src + r * ld;
      int d = 0;
      for (; d + kW <= D; d += kW) store(o + d, load(row + d));
      if (d < D) store(o + d, simd::load_n(row + d, D - d));  // zero-fills to Dp
    } else {
      for (int d = 0; d < Dp; d += kW) store(o + d, vf16{});
    }
  }
}

// dst[0..D) += src[0..D).
SHOAL_INLINE void add_row(float* dst, const float* src, int D) {
  int d = 0;
  for (; d + kW <= D; d += kW) store(dst + d, load(dst + d) + load(src + d));
  for (; d < D; ++d) dst[d] += src[d];
}

struct Dims {
  int T, NH, Dqk, Dv;
  float scale;
};

// How segment ids relate queries [i0, i0+nq) and keys [j0, j0+nk) of a tile pair, from their id ranges.
enum class SegTile { kDisjoint, kUniform, kMixed };  // skip / plain causal mask / per-element segment mask
SHOAL_INLINE SegTile seg_tile(const int32_t* seg, int i0, int nq, int j0, int nk) {
  if (seg == nullptr) return SegTile::kUniform;
  int qmin = seg[i0], qmax = seg[i0], kmin = seg[j0], kmax = seg[j0];
  for (int r = 1; r < nq; ++r) qmin = std::min(qmin, seg[i0 + r]), qmax = std::max(qmax, seg[i0 + r]);
  for (int r = 1; r < nk; ++r) kmin = std::min(kmin, seg[j0 + r]), kmax = std::max(kmax, seg[j0 + r]);
  if (kmax < qmin || kmin > qmax) return SegTile::kDisjoint;
  return qmin == qmax && kmin == kmax ? SegTile::kUniform : SegTile::kMixed;
}

// Visibility mask of keys j0 + 16·half + lane for query i.
SHOAL_INLINE vi16 key_mask(int i, int j0, int half, const int32_t* kseg, const int32_t* seg) {
  const vi16 lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  vi16 jv = lane + (j0 + half * kW);
  vi16 ok = jv <= (vi16{} + i);
  if (seg != nullptr) {
    vi16 ks;
    std::memcpy(&ks, kseg + half * kW, sizeof(ks));
    ok &= ks == (vi16{} + seg[i]);
  }
  return ok;
}

// Forward pass 1 over a [key][query] score tile: scale, mask (key j visible to query i iff j ≤ i and, with
// segments, seg[j] == seg[i]; masked scores become −∞) and running column maxima. Specialised on kSeg so the
// plain causal loop carries no segment work.
template <bool kSeg>
SHOAL_INLINE void scale_mask_max(float* St, vf16* mx, const vi16* qi, const vi16* qs, const int32_t* seg, int j0,
                                 int nk, float scale) {
  const vf16 ninf = simd::splat(-__builtin_inff());
  for (int jj = 0; jj < nk; ++jj) {
    const int j = j0 + jj;
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      vi16 ok = qi[h] >= j;
      if constexpr (kSeg) ok &= qs[h] == seg[j];
      vf16 sv = load(St + jj * kB + h * kW) * scale;
      sv = ok ? sv : ninf;
      store(St + jj * kB + h * kW, sv);
      mx[h] = simd::vmax(mx[h], sv);
    }
  }
}

// One (sequence, head). Scores are formed transposed, St[key][query] = K·Qᵀ with the query tile packed once
// as Qᵀ: K rows are read in place (broadcast operands), and the online softmax runs down the columns, so
// maxima, sums and rescaling are plain vector ops over 32 queries (no horizontal reductions, no scalar exp).
SHOAL_SIMD_CLONES void attention_forward_head(float* out, float* lse, const float* q, const float* k, const float* v,
                                              const int32_t* seg, const Dims dm) {
  const int T = dm.T, Dqk = dm.Dqk, Dv = dm.Dv, Dvp = round_up16(Dv);
  const int64_t lq = (int64_t)dm.NH * Dqk, lv = (int64_t)dm.NH * Dv;
  const bool v_direct = Dv % kW == 0;
  alignas(64) float qt[kMaxD * kB];  // Qᵀ [Dqk][32]
  alignas(64) float vp[kB * kMaxD];  // V tile rows [32][Dvp] when Dv is not a multiple of 16
  alignas(64) float St[kB * kB];     // scores, then probabilities, [key][query]
  alignas(64) float O[kB * kMaxD];   // unnormalised output [query][Dvp]
  alignas(64) float corr[kB];
  alignas(64) int32_t qseg[kB];
  const vi16 lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  const vf16 ninf = simd::splat(-__builtin_inff());
  for (int i0 = 0; i0 < T; i0 += kB) {
    const int nq = std::min(kB, T - i0);
    pack_t(qt, q + i0 * lq, lq, nq, Dqk);
    if (seg != nullptr)
      for (int r = 0; r < kB; ++r) qseg[r] = r < nq ? seg[i0 + r] : seg[i0];
    vi16 qs[2] = {}, qi[2] = {lane + i0, lane + (i0 + kW)};
    if (seg != nullptr) std::memcpy(qs, qseg, sizeof(qs));
    vf16 m[2] = {ninf, ninf}, l[2] = {};
    std::memset(O, 0, sizeof(float) * kB * Dvp);
    const int jend = i0 + nq;
    for (int j0 = 0; j0 < jend; j0 += kB) {
      const int nk = std::min(kB, jend - j0);
      const SegTile rel = seg_tile(seg, i0, nq, j0, nk);
      if (rel == SegTile::kDisjoint) continue;
      gemm_nt(St, nk, k + j0 * lq, lq, qt, Dqk);
      // Pass 1: scale, mask (key j visible to query i iff j ≤ i and same segment), column maxima.
      vf16 mx[2] = {ninf, ninf};
      if (rel == SegTile::kMixed)
        scale_mask_max<true>(St, mx, qi, qs, seg, j0, nk, dm.scale);
      else
        scale_mask_max<false>(St, mx, qi, qs, seg, j0, nk, dm.scale);
      // Rescale: m' = max(m, mx); columns with nothing visible yet use 0 as the shift (then p = 0, corr = 0).
      vf16 shift[2];
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const vf16 m_new = simd::vmax(m[h], mx[h]);
        shift[h] = m_new == ninf ? vf16{} : m_new;
        const vf16 c = simd::exp(m[h] - shift[h]);
        store(corr + h * kW, c);
        l[h] *= c;
        m[h] = m_new;
      }
      for (int r = 0; r < nq; ++r) {
        if (corr[r] == 1.0f) continue;
        float* orow = O + r * Dvp;
        for (int d = 0; d < Dvp; d += kW) store(orow + d, load(orow + d) * corr[r]);
      }
      // Pass 2: probabilities and column sums.
      for (int jj = 0; jj < nk; ++jj) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          const vf16 p = simd::exp(load(St + jj * kB + h * kW) - shift[h]);
          store(St + jj * kB + h * kW, p);
          l[h] += p;
        }
      }
      // O[query][:] += Σ_key P[key][query] · V[key][:].
      const float* vrows = v + j0 * lv;
      int64_t ldv = lv;
      if (!v_direct) {
        pack_rows(vp, vrows, lv, nk, Dv, Dvp);
        vrows = vp;
        ldv = Dvp;
      }
      gemm_acc(O, Dvp, nq, St, 1, kB, vrows, ldv, nk, Dvp);
    }
    alignas(64) float mm[kB], ll[kB];
    store(mm, m[0]), store(mm + kW, m[1]), store(ll, l[0]), store(ll + kW, l[1]);
    for (int r = 0; r < nq; ++r) {
      const float inv = 1.0f / ll[r];
      float* orow = out + (i0 + r) * lv;
      int d = 0;
      for (; d + kW <= Dv; d += kW) store(orow + d, load(O + r * Dvp + d) * inv);
      for (; d < Dv; ++d) orow[d] = O[r * Dvp + d] * inv;
      lse[i0 + r] = mm[r] + std::log(ll[r]);
    }
  }
}

SHOAL_SIMD_CLONES void attention_backward_head(float* dq, float* dk, float* dv, const float* dout, const float* out,
                                               const float* lse, const float* q, const float* k, const float* v,
                                               const int32_t* seg, const Dims dm) {
  const int T = dm.T, Dqk = dm.Dqk, Dv = dm.Dv, Dqp = round_up16(Dqk), Dvp = round_up16(Dv);
  const int64_t lq = (int64_t)dm.NH * Dqk, lv = (int64_t)dm.NH * Dv;
  alignas(64) float kt[kMaxD * kB];   // K tile transposed [Dqk][32]
  alignas(64) float kp[kB * kMaxD];   // K tile rows [32][Dqp]
  alignas(64) float vt[kMaxD * kB];   // V tile transposed [Dv][32]
  alignas(64) float dk_acc[kB * kMaxD];
  alignas(64) float dv_acc[kB * kMaxD];
  alignas(64) float qp[kB * kMaxD];   // Q tile rows [32][Dqp]
  alignas(64) float dop[kB * kMaxD];  // dO tile rows [32][Dvp]
  alignas(64) float dq_t[kB * kMaxD];
  alignas(64) float P[kB * kB];
  alignas(64) float dS[kB * kB];
  alignas(64) int32_t kseg[kB];
  float Di[kB];
  const bool dq_direct = Dqk % kW == 0;
  for (int j0 = 0; j0 < T; j0 += kB) {
    const int nk = std::min(kB, T - j0);
    pack_t(kt, k + j0 * lq, lq, nk, Dqk);
    pack_rows(kp, k + j0 * lq, lq, nk, Dqk, Dqp);
    pack_t(vt, v + j0 * lv, lv, nk, Dv);
    if (seg != nullptr)
      for (int jj = 0; jj < kB; ++jj) kseg[jj] = jj < nk ? seg[j0 + jj] : 0;
    std::memset(dk_acc, 0, sizeof(float) * kB * Dqp);
    std::memset(dv_acc, 0, sizeof(float) * kB * Dvp);
    for (int i0 = j0; i0 < T; i0 += kB) {
      const int nq = std::min(kB, T - i0);
      const SegTile rel = seg_tile(seg, i0, nq, j0, nk);
      if (rel == SegTile::kDisjoint) continue;
      const int32_t* tile_seg = rel == SegTile::kMixed ? seg : nullptr;
      pack_rows(qp, q + i0 * lq, lq, nq, Dqk, Dqp);
      pack_rows(dop, dout + i0 * lv, lv, nq, Dv, Dvp);
      for (int r = 0; r < nq; ++r) {  // D_i = ⟨dO_i, O_i⟩ (dop is zero-padded past Dv)
        const float* o = out + (i0 + r) * lv;
        const float* g = dop + r * Dvp;
        vf16 acc{};
        int d = 0;
        for (; d + kW <= Dv; d += kW) acc += load(g + d) * load(o + d);
        if (d < Dv) acc += load(g + d) * simd::load_n(o + d, Dv - d);
        Di[r] = simd::reduce_add(acc);
      }
      gemm_nt(P, nq, qp, Dqp, kt, Dqk);    // S = Q·Kᵀ
      gemm_nt(dS, nq, dop, Dvp, vt, Dv);   // dP = dO·Vᵀ
      for (int r = 0; r < nq; ++r) {
        const int i = i0 + r;
        const float L = lse[i];
        for (int half = 0; half < 2; ++half) {
          float* prow = P + r * kB + half * kW;
          float* drow = dS + r * kB + half * kW;
          vf16 s = load(prow) * dm.scale - L;
          vf16 p = simd::exp(s);
          p = key_mask(i, j0, half, kseg, tile_seg) ? p : vf16{};
          store(prow, p);
          store(drow, p * (load(drow) - Di[r]) * dm.scale);
        }
      }
      // dV += Pᵀ·dO, dK += dSᵀ·Q  (W element (key r, query j) = P[j][r]).
      gemm_acc(dv_acc, Dvp, nk, P, 1, kB, dop, Dvp, nq, Dvp);
      gemm_acc(dk_acc, Dqp, nk, dS, 1, kB, qp, Dqp, nq, Dqp);
      // dQ += dS·K.
      if (dq_direct) {
        gemm_acc(dq + i0 * lq, lq, nq, dS, kB, 1, kp, Dqp, nk, Dqp);
      } else {
        std::memset(dq_t, 0, sizeof(float) * kB * Dqp);
        gemm_acc(dq_t, Dqp, nq, dS, kB, 1, kp, Dqp, nk, Dqp);
        for (int r = 0; r < nq; ++r) add_row(dq + (i0 + r) * lq, dq_t + r * Dqp, Dqk);
      }
    }
    for (int jj = 0; jj < nk; ++jj) {
      add_row(dk + (j0 + jj) * lq, dk_acc + jj * Dqp, Dqk);
      add_row(dv + (j0 + jj) * lv, dv_acc + jj * Dvp, Dv);
    }
  }
}

void check_dims(int Dqk, int Dv) {
  CHECK(Dqk >= 1 && Dqk <= kMaxD && Dv >= 1 && Dv <= kMaxD)
      << "attention: head dims Dqk=" << Dqk << " Dv=" << Dv << " must be in [1, " << kMaxD << "]";
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* seg,
                       int B, int T, int NH, int Dqk, int Dv, float scale) {
  check_dims(Dqk, Dv);
  const Dims dm{T, NH, Dqk, Dv, scale};
  ThreadPool::Default().ParallelFor((int64_t)B * NH, 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / NH, h = bh % NH;
      const int64_t qo = (b * T * NH + h) * Dqk, vo = (b * T * NH + h) * Dv;
      attention_forward_head(out + vo, lse + bh * T, q + qo, k + qo, v + vo, seg ? seg + b * T : nullptr, dm);
    }
  });
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out, const float* lse,
                        const float* q, const float* k, const float* v, const int32_t* seg, int B, int T, int NH,
                        int Dqk, int Dv, float scale) {
  check_dims(Dqk, Dv);
  const Dims dm{T, NH, Dqk, Dv, scale};
  ThreadPool::Default().ParallelFor((int64_t)B * NH, 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / NH, h = bh % NH;
      const int64_t qo = (b * T * NH + h) * Dqk, vo = (b * T * NH + h) * Dv;
      attention_backward_head(dq + qo, dk + qo, dv + vo, dout + vo, out + vo, lse + bh * T, q + qo, k + qo, v + vo,
                              seg ? seg + b * T : nullptr, dm);
    }
  });
}

}  // namespace shoal::kernels
