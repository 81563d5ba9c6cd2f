// SwiGLU m = SiLU(a) ⊙ b on a fused gate|up buffer (spec §1.1, §3.6; backward per Appendix A); fast CPU.
// Layout: row n of gate_up is [a = gate_proj output (I values) | b = up_proj output (I values)], i.e. the
// output of ONE GEMM against the row-concatenated [gate_proj; up_proj] weight [2I, C] (HF v5's fused
// gate_up_proj order). Shapes: N = rows, I = intermediate size.
#pragma once

namespace shoal::kernels {

// out = SiLU(a) ⊙ b.
void swiglu_forward(float* out /*[N,I]*/, const float* gate_up /*[N,2I]*/, int N, int I);
// dgate_up[:, :I] += dout ⊙ b ⊙ σ(a)(1 + a(1 − σ(a)));  dgate_up[:, I:] += dout ⊙ SiLU(a).
void swiglu_backward(float* dgate_up /*[N,2I] +=*/, const float* dout /*[N,I]*/, const float* gate_up /*[N,2I]*/,
                     int N, int I);

}  // namespace shoal::kernels
