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

/// Block-form weights (pack_weights(BlockWeights): GGUF's Q8_0 ... Q6_K), integer activations.
/// With c the activation codes and za their zero point (0 for int8 and int8_per_group), u the
/// codes, sc/mn the sub-scales/mins (1 where not stored) and d/m the fp16 scales (m = 0 without
/// offset), for output (m, n) and each super-block s in increasing order:
///   A_s = sum_{j in s} sc_j * sum_{k in j} (c_k - za) * (u_k - zero)          int32, exact
///   B_s = sum_{j in s} mn_j * sum_{k in j} (c_k - za)                         int32, exact
///   per-row activations:   t = fma(float(A_s), d_s, t);            offset: t = fma(float(B_s), m_s, t)
///   int8_per_group (a scale s_a per row and super-block):
///                          t = fma(float(A_s), d_s * s_a[m,s], t); offset: t = fma(float(B_s), m_s * s_a[m,s], t)
/// y = t * s_a[m] (per row) or y = t (per group); t starts at 0. Exactness (the int32 bound): with
/// |c - za| <= 255, |u - zero| <= E, |sc| <= 128 and S columns a super-block, every partial sum
/// of A_s is below 256 * S * E * 128 and of B_s below 256 * S * 128 in magnitude; pack_weights
/// rejects super-blocks for which that reaches 2^31 (GGUF's worst, Q6_K: 256*256*32*128 = 2^28).
/// The kernels compute the same integers another way (sum c*u, then subtract zero * sum c and
/// za * wsum, with the scale products in int16 pairs or int32 lanes); integers are exact in any
/// order, and the float steps are these, one rounding each, so every Isa gives these bits.
inline void linear_block_int(const detail::QuantizedActivations& a, const PackedWeights& w, float* y, Index ldy,
                             Index n0, Index n1) noexcept {
  const BlockLayout& L = w.block();
  const Index S = L.super_block(), J = L.sub_block();
  for (Index m = 0; m < a.rows; ++m) {
    const int8_t* c = a.row(m);
    const int32_t za = a.zero[size_t(m)];
    for (Index n = n0; n < n1; ++n) {
      float t = 0.0f;
      for (Index s = 0; s < L.supers(); ++s) {
        int32_t A = 0, B = 0;
        for (Index j = s * S / J; j < (s + 1) * S / J; ++j) {
          int32_t dot = 0, cs = 0;
          for (Index k = j * J; k < (j + 1) * J; ++k) {
            dot += (int32_t(c[k]) - za) * (L.code(n, k) - L.zero());
            cs += int32_t(c[k]) - za;
          }
          A += L.sub_scale(n, j) * dot;
          B += L.sub_min(n, j) * cs;
        }
        const float d = detail::half_bits_to_float(L.d_bits(n, s)), mo = detail::half_bits_to_float(L.m_bits(n, s));
        const float sa = a.per_group ? a.row_scale(m, s) : 1.0f;
        t = std::fma(float(A), a.per_group ? d * sa : d, t);
        if (L.offset()) t = std::fma(float(B), a.per_group ? mo * sa : mo, t);
      }
      y[m * ldy + n] = a.per_group ? t : t * a.row_scale(m, 0);
    }
  }
}

/// Block-form weights, float activations (weight-only): for output (m, n), t = 0 and for each
/// sub-block j (of super-block s) in increasing order:
///   p  = 0;  p = fma(x[m,k], float(u_k - zero), p) for k ascending in j;   t = fma(p, d_s * sc_j, t)
///   offset: xs = 0;  xs = xs + x[m,k] for k ascending in j;               t = fma(xs, m_s * mn_j, t)
/// y = t. d_s * sc_j and m_s * mn_j are exact in float (11 x 8 significant bits). xs does not
/// depend on n: linear() computes it once per row (xsums), every Isa reads the same values.
inline void linear_block_f32(const float* x, Index M, Index ldx, const PackedWeights& w, float* y, Index ldy,
                             Index n0, Index n1) noexcept {
  const BlockLayout& L = w.block();
  const Index S = L.super_block(), J = L.sub_block();
  for (Index m = 0; m < M; ++m)
    for (Index n = n0; n < n1; ++n) {
      float t = 0.0f;
      for (Index j = 0; j < L.cols() / J; ++j) {
        const Index s = j * J / S;
        const float d = detail::half_bits_to_float(L.d_bits(n, s)), mo = detail::half_bits_to_float(L.m_bits(n, s));
        float p = 0.0f, xs = 0.0f;
        for (Index k = j * J; k < (j + 1) * J; ++k) {
          p = std::fma(x[m * ldx + k], float(L.code(n, k) - L.zero()), p);
          xs = xs + x[m * ldx + k];
        }
        t = std::fma(p, d * float(L.sub_scale(n, j)), t);
        if (L.offset()) t = std::fma(xs, mo * float(L.sub_min(n, j)), t);
      }
      y[m * ldy + n] = t;
    }
}

}  // namespace lowbit::kernels::reference
