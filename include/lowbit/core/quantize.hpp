// quantize.hpp: the numeric contract: float <-> integer codes under QuantParams.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/types.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace lowbit {

/// q = clamp(nearbyint(x * inv_scale) + zero_point, qmin, qmax), ties to even (the default
/// floating-point rounding mode). The clamp happens in float so huge |x| cannot overflow.
inline int32_t quantize_value(float x, float inv_scale, int32_t zero_point, int qmin, int qmax) {
  const float q = std::nearbyint(x * inv_scale) + static_cast<float>(zero_point);
  return static_cast<int32_t>(std::clamp(q, static_cast<float>(qmin), static_cast<float>(qmax)));
}

/// x_hat = (q - zero_point) * scale.
inline float dequantize_value(int32_t q, float scale, int32_t zero_point) {
  return static_cast<float>(q - zero_point) * scale;
}

namespace detail {

/// Quantizes one row segment without validation; `out` receives the codes.
inline void quantize_block(const float* x, Index n, AffineParams p, int qmin, int qmax,
                           int32_t* out) {
  const float inv_scale = 1.0f / p.scale;
  for (Index i = 0; i < n; ++i) out[i] = quantize_value(x[i], inv_scale, p.zero_point, qmin, qmax);
}

/// Fake-quantizes one row segment: out[i] = dequantize(quantize(x[i])); `out` may alias `x`.
inline void fake_quantize_block(const float* x, Index n, AffineParams p, int qmin, int qmax,
                                float* out) noexcept {
  const float inv_scale = 1.0f / p.scale;
  for (Index i = 0; i < n; ++i)
    out[i] = dequantize_value(quantize_value(x[i], inv_scale, p.zero_point, qmin, qmax), p.scale,
                              p.zero_point);
}

}  // namespace detail

/// Integer codes of `x` (finite, non-empty) under `params`; throws lowbit::Error on bad input.
inline MatrixXiR quantize(const Eigen::Ref<const MatrixXfR>& x, const QuantParams& params) {
  detail::require_finite(x, "x");
  validate(params, x.rows(), x.cols());
  MatrixXiR q(x.rows(), x.cols());
  const int qmin = params.scheme.qmin(), qmax = params.scheme.qmax();
  detail::for_each_block(params.scheme, x.rows(), x.cols(),
                         [&](Index p, Index r, Index c0, Index c1) {
                           detail::quantize_block(x.data() + r * x.outerStride() + c0, c1 - c0, params.at(p), qmin, qmax,
                                                  &q(r, c0));
                         });
  return q;
}

/// Throws lowbit::Error unless every code lies in [qmin, qmax] of the scheme.
inline void validate_codes(const Eigen::Ref<const MatrixXiR>& codes, const Scheme& scheme) {
  detail::require(codes.size() > 0, "codes: expected a non-empty matrix");
  const int qmin = scheme.qmin(), qmax = scheme.qmax();
  if (codes.minCoeff() >= qmin && codes.maxCoeff() <= qmax) return;
  for (Index r = 0; r < codes.rows(); ++r)
    for (Index c = 0; c < codes.cols(); ++c)
      detail::require(codes(r, c) >= qmin && codes(r, c) <= qmax,
                      "codes({}, {}): expected {}..{} for {}-bit {}, got {}", r, c, qmin, qmax,
                      scheme.bits, scheme.symmetric ? "symmetric" : "asymmetric", codes(r, c));
}

/// Float values of integer codes under `params`; throws lowbit::Error on bad input.
inline MatrixXfR dequantize(const Eigen::Ref<const MatrixXiR>& codes, const QuantParams& params) {
  validate(params, codes.rows(), codes.cols());
  validate_codes(codes, params.scheme);
  MatrixXfR x(codes.rows(), codes.cols());
  detail::for_each_block(params.scheme, codes.rows(), codes.cols(),
                         [&](Index p, Index r, Index c0, Index c1) {
                           const AffineParams a = params.at(p);
                           for (Index c = c0; c < c1; ++c)
                             x(r, c) = dequantize_value(codes(r, c), a.scale, a.zero_point);
                         });
  return x;
}

}  // namespace lowbit
