// reference.hpp: the scalar reference kernels; they define every result the SIMD paths must match.
#pragma once

#include <lowbit/core/types.hpp>
#include <lowbit/gemm/activation_quant.hpp>
#include <lowbit/gemm/packed_weights.hpp>

#include <cmath>
#include <cstdint>

namespace lowbit::kernels::reference {

/// Integer activations: for output (m, n), with c the activation codes, za their zero point,
/// u the unsigned weight codes and zw their zero point (see PackedWeights, QuantizedActivations):
///   for each group g (columns k in [g*gs, min(K, (g+1)*gs)), in increasing g):
///     D_g = sum_k c*u - zw[n,g] * sum_k c - za[m] * wsum[n,g]      (int32, exact:
///         = sum_k (c - za) * (u - zw) = sum_k (q_a - zp_a) * (q_w - z_w))
///     t   = fma(float(D_g), s_w[n,g] * s_a[m,g], t)   per-group activations, or
///     t   = fma(float(D_g), s_w[n,g], t)              per-row activations
///   y = t (per group) or y = t * s_a[m] (per row); t starts at 0.
/// Writes columns n0..n1-1 of rows 0..M-1 of y (row stride ldy), before the epilogue.
inline void linear_int(const detail::QuantizedActivations& a, const PackedWeights& w, float* y,
                       Index ldy, Index n0, Index n1) noexcept {
  for (Index m = 0; m < a.rows; ++m) {
    const int8_t* c = a.row(m);
    for (Index n = n0; n < n1; ++n) {
      float t = 0.0f;
      for (Index g = 0; g < w.groups(); ++g) {
        int32_t dot = 0;
        for (Index k = w.group_begin(g); k < w.group_end(g); ++k) dot += int32_t(c[k]) * w.code(n, k);
        const int32_t d = dot - w.zero_point(n, g) * a.group_sum(m, g) - a.zero[size_t(m)] * w.wsum(n, g);
        const float s = a.per_group ? w.scale(n, g) * a.row_scale(m, g) : w.scale(n, g);
        t = std::fma(float(d), s, t);
      }
      y[m * ldy + n] = a.per_group ? t : t * a.row_scale(m, 0);
    }
  }
}

/// Float activations (weight-only quantization): for output (m, n), t = 0 and for each group g
///   p = 0;  p = fma(x[m,k], float(u[n,k] - zw[n,g]), p) for k ascending in the group;
///   t = fma(p, s_w[n,g], t);
/// y = t. Writes columns n0..n1-1 of rows 0..M-1 of y, before the epilogue.
inline void linear_f32(const float* x, Index M, Index ldx, const PackedWeights& w, float* y, Index ldy,
                       Index n0, Index n1) noexcept {
  for (Index m = 0; m < M; ++m)
    for (Index n = n0; n < n1; ++n) {
      float t = 0.0f;
      for (Index g = 0; g < w.groups(); ++g) {
        const float zw = float(w.zero_point(n, g));
        float p = 0.0f;
        for (Index k = w.group_begin(g); k < w.group_end(g); ++k)
          p = std::fma(x[m * ldx + k], float(w.code(n, k)) - zw, p);
        t = std::fma(p, w.scale(n, g), t);
      }
      y[m * ldy + n] = t;
    }
}

}  // namespace lowbit::kernels::reference
