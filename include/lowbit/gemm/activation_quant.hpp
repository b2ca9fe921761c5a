// activation_quant.hpp: on-the-fly (dynamic) quantization of activations for the integer kernels.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/quantize.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/gemm/packed_weights.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

namespace lowbit {

/// How linear() treats the activations x.
/// - float32: weight-only (W8A32/W4A32): fp32 activations times dequantized weights.
/// - int8: symmetric INT8 per row, narrow range: s = max(amax / 127, float eps) (core's
///   MinMaxObserver rule with narrow_range), c = clamp(nearbyint(x / s), -127, 127).
/// - uint8: asymmetric UINT8 per row: core's rule for Scheme::per_channel(8, false) gives (s, zp),
///   q = clamp(nearbyint(x / s) + zp, 0, 255).
/// - int8_per_group: as int8, but one scale per (row, weight group) (llama.cpp's q4_0 x q8_0);
///   needs per-group weights.
/// Quantization uses core's quantize_value (x * (1 / s), ties to even) and is part of the call.
enum class ActivationQuant { float32, int8, uint8, int8_per_group };

inline std::string_view to_string(ActivationQuant a) {
  switch (a) {
    case ActivationQuant::float32: return "float32";
    case ActivationQuant::int8: return "int8";
    case ActivationQuant::uint8: return "uint8";
    case ActivationQuant::int8_per_group: return "int8_per_group";
  }
  return "unknown";
}

namespace detail {

/// Activations quantized for one linear() call. Codes are stored signed, c in [-128, 127]
/// (uint8 codes minus 128), with the zero point shifted the same way (za = zp - 128; 0 for int8),
/// so c - za = q - zp. Rows are padded with 0 to the weights' padded K.
struct QuantizedActivations {
  Index rows = 0, cols = 0, stride = 0, groups = 0;
  bool per_group = false;      ///< one scale per (row, group) rather than per row
  bool asymmetric = false;     ///< za may be non-zero
  std::vector<int8_t> codes;   ///< [rows][stride]
  std::vector<float> scale;    ///< [rows][groups] when per_group, else [rows]
  std::vector<int32_t> zero;   ///< [rows]: za
  std::vector<int32_t> sums;   ///< [rows][groups]: sum of c over the group's real columns
  // Block-form weights only (filled by block_activation_sums):
  Index sub_stride = 0, unit_stride = 0;
  std::vector<int16_t> sub_sums;  ///< [rows][K / sum_cols]: sum of c over each sub-block (|.| <= 4096)
  /// [rows][K / unit_cols] when zero != 0 and the codes are below 8 bits: two int16 (low half
  /// first), zero * the sum of c over bytes 0-1, and over bytes 2-3, of each 4 columns of the unit.
  std::vector<int32_t> zpairs;

  const int8_t* row(Index m) const { return codes.data() + size_t(m) * size_t(stride); }
  float row_scale(Index m, Index g) const { return scale[size_t(per_group ? m * groups + g : m)]; }
  int32_t group_sum(Index m, Index g) const { return sums[size_t(m * groups + g)]; }
};

/// Row operations of the portable path; each Isa provides the same two (exactly the same results).
struct ScalarRowOps {
  static void range(const float* x, Index n, float& mn, float& mx) noexcept {
    mn = x[0];
    mx = x[0];
    for (Index i = 1; i < n; ++i) {
      mn = std::min(mn, x[i]);
      mx = std::max(mx, x[i]);
    }
  }
  /// out[i] = quantize_value(x[i], inv, zp, qmin, qmax) - shift.
  static void quantize_row(const float* x, Index n, float inv, int zp, int qmin, int qmax, int shift,
                           int8_t* out) noexcept {
    for (Index i = 0; i < n; ++i) out[i] = int8_t(quantize_value(x[i], inv, zp, qmin, qmax) - shift);
  }
};

/// Quantizes x[M, K] (row stride ldx, finite: callers validate) for weights `w`, with the row
/// operations of one Isa.
template <class Ops>
void quantize_activations_with(const float* x, Index M, Index K, Index ldx, const PackedWeights& w,
                               ActivationQuant mode, QuantizedActivations& a) {
  a.rows = M;
  a.cols = K;
  a.stride = w.padded_cols();
  a.groups = w.groups();
  a.per_group = mode == ActivationQuant::int8_per_group;
  a.asymmetric = mode == ActivationQuant::uint8;
  a.codes.assign(size_t(M) * size_t(a.stride), 0);
  a.scale.assign(size_t(a.per_group ? M * a.groups : M), 1.0f);
  a.zero.assign(size_t(M), 0);
  a.sums.assign(size_t(M * a.groups), 0);
  const Scheme sym{8, true, Granularity::per_channel, 0, true};
  const Scheme asym = Scheme::per_channel(8, false);
  for (Index m = 0; m < M; ++m) {
    const float* xr = x + m * ldx;
    int8_t* c = a.codes.data() + size_t(m) * size_t(a.stride);
    const Index blocks = a.per_group ? a.groups : 1;
    for (Index b = 0; b < blocks; ++b) {
      const Index k0 = a.per_group ? w.group_begin(b) : 0, k1 = a.per_group ? w.group_end(b) : K;
      float mn, mx;
      Ops::range(xr + k0, k1 - k0, mn, mx);
      const AffineParams p = params_from_range_unchecked(mn, mx, a.asymmetric ? asym : sym, 1.0f);
      a.scale[size_t(a.per_group ? m * a.groups + b : m)] = p.scale;
      if (a.asymmetric) a.zero[size_t(m)] = p.zero_point - 128;
      Ops::quantize_row(xr + k0, k1 - k0, 1.0f / p.scale, p.zero_point, a.asymmetric ? 0 : -127,
                        a.asymmetric ? 255 : 127, a.asymmetric ? 128 : 0, c + k0);
    }
    for (Index g = 0; g < a.groups; ++g) {
      int32_t s = 0;
      for (Index k = w.group_begin(g); k < w.group_end(g); ++k) s += c[k];
      a.sums[size_t(m * a.groups + g)] = s;
    }
  }
}

/// The activation sums the block kernels read (sub-block sums, zero-point pairs); integer and
/// exact, computed once per call by every Isa alike.
inline void block_activation_sums(QuantizedActivations& a, const PackedWeights& w) {
  const BlockLayout& L = w.block();
  const Index K = a.cols, sc = L.sum_cols(), uc = L.unit_cols();
  a.sub_stride = K / sc;
  a.sub_sums.assign(size_t(a.rows * a.sub_stride), 0);
  const bool pairs = L.zero() != 0 && L.low_width() < 8;
  a.unit_stride = pairs ? K / uc : 0;
  a.zpairs.assign(size_t(a.rows * a.unit_stride), 0);
  for (Index m = 0; m < a.rows; ++m) {
    const int8_t* c = a.row(m);
    for (Index j = 0; j < a.sub_stride; ++j) {
      int32_t t = 0;
      for (Index k = j * sc; k < (j + 1) * sc; ++k) t += c[k];
      a.sub_sums[size_t(m * a.sub_stride + j)] = int16_t(t);
    }
    for (Index u = 0; pairs && u < a.unit_stride; ++u) {
      int32_t lo = 0, hi = 0;
      for (Index k = u * uc; k < (u + 1) * uc; k += 4) {
        lo += c[k] + c[k + 1];
        hi += c[k + 2] + c[k + 3];
      }
      a.zpairs[size_t(m * a.unit_stride + u)] =
          int32_t(uint32_t(uint16_t(int16_t(lo * L.zero()))) | (uint32_t(uint16_t(int16_t(hi * L.zero()))) << 16));
    }
  }
}

/// The reference quantizer.
inline void quantize_activations(const float* x, Index M, Index K, Index ldx, const PackedWeights& w,
                                 ActivationQuant mode, QuantizedActivations& a) {
  quantize_activations_with<ScalarRowOps>(x, M, K, ldx, w, mode, a);
}

/// True when no value of x[0..n) is NaN or infinite (an exponent test that vectorizes).
inline bool all_finite(const float* x, Index n) noexcept {
  uint32_t bad = 0;
  for (Index i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, x + i, 4);
    bad |= uint32_t((b & 0x7F800000u) == 0x7F800000u);
  }
  return bad == 0;
}

}  // namespace detail
}  // namespace lowbit
