// activation_quant.hpp: on-the-fly (dynamic) quantization of activations for the integer kernels.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/quantize.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/gemm/packed_weights.hpp>

#include <algorithm>
#include <cstdint>
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

  const int8_t* row(Index m) const { return codes.data() + size_t(m) * size_t(stride); }
  float row_scale(Index m, Index g) const { return scale[size_t(per_group ? m * groups + g : m)]; }
  int32_t group_sum(Index m, Index g) const { return sums[size_t(m * groups + g)]; }
};

/// Quantizes x[M, K] (row stride ldx, finite: callers validate) for weights `w`.
inline void quantize_activations(const float* x, Index M, Index K, Index ldx, const PackedWeights& w,
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
      const auto [mn, mx] = std::minmax_element(xr + k0, xr + k1);
      const AffineParams p = params_from_range_unchecked(*mn, *mx, a.asymmetric ? asym : sym, 1.0f);
      const float inv = 1.0f / p.scale;
      a.scale[size_t(a.per_group ? m * a.groups + b : m)] = p.scale;
      if (a.asymmetric) {
        a.zero[size_t(m)] = p.zero_point - 128;
        for (Index k = k0; k < k1; ++k) c[k] = int8_t(quantize_value(xr[k], inv, p.zero_point, 0, 255) - 128);
      } else {
        for (Index k = k0; k < k1; ++k) c[k] = int8_t(quantize_value(xr[k], inv, 0, -127, 127));
      }
    }
    for (Index g = 0; g < a.groups; ++g) {
      int32_t s = 0;
      for (Index k = w.group_begin(g); k < w.group_end(g); ++k) s += c[k];
      a.sums[size_t(m * a.groups + g)] = s;
    }
  }
}

}  // namespace detail
}  // namespace lowbit
