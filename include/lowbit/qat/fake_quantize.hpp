// fake_quantize.hpp: fake quantization and its straight-through-estimator backward (PyTorch's mask).
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/quantize.hpp>
#include <lowbit/core/types.hpp>

#include <cmath>
#include <cstdint>

namespace lowbit::qat {

namespace detail {

using lowbit::detail::for_each_block;
using lowbit::detail::require;
using lowbit::detail::require_finite;

/// nearbyint(x * inv_scale) + zero_point before the clamp, in float as core's quantize_value
/// computes it (exact for |code| < 2^24; no integer overflow for huge |x|).
inline float unclamped_code(float x, float inv_scale, int32_t zero_point) {
  return std::nearbyint(x * inv_scale) + static_cast<float>(zero_point);
}

/// Address of element (r, c) of a row-major view (its inner stride is 1).
inline const float* row_ptr(const Eigen::Ref<const MatrixXfR>& m, Index r, Index c) {
  return m.data() + r * m.outerStride() + c;
}

/// Throws unless `params` fits x (finite, non-empty).
inline void check_input(const Eigen::Ref<const MatrixXfR>& x, const QuantParams& params) {
  require_finite(x, "x");
  validate(params, x.rows(), x.cols());
}

/// Throws unless grad_y is finite and shaped like x.
inline void check_grad(const Eigen::Ref<const MatrixXfR>& grad_y,
                       const Eigen::Ref<const MatrixXfR>& x) {
  require(grad_y.rows() == x.rows() && grad_y.cols() == x.cols(),
          "grad_y: expected shape {}x{} (as x), got {}x{}", x.rows(), x.cols(), grad_y.rows(),
          grad_y.cols());
  require_finite(grad_y, "grad_y");
}

/// STE on one row segment: g[i] = gy[i] where the unclamped code lies in [qmin, qmax], else 0.
inline void ste_block(const float* gy, const float* x, Index n, AffineParams p, int qmin, int qmax,
                      float* g) noexcept {
  const float inv_scale = 1.0f / p.scale;
  const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
  for (Index i = 0; i < n; ++i) {
    const float q = unclamped_code(x[i], inv_scale, p.zero_point);
    g[i] = (q >= lo && q <= hi) ? gy[i] : 0.0f;
  }
}

}  // namespace detail

/// Writes the fake-quantized x, exactly dequantize(quantize(x, params), params), into `out`
/// (resized to x's shape; reusing `out` across calls avoids allocation; `out` may be x itself).
/// Per tensor, per channel (rows) or per group, as `params.scheme` says.
inline void fake_quantize_into(const Eigen::Ref<const MatrixXfR>& x, const QuantParams& params,
                               MatrixXfR& out) {
  detail::check_input(x, params);
  out.resize(x.rows(), x.cols());
  const int qmin = params.scheme.qmin(), qmax = params.scheme.qmax();
  detail::for_each_block(
      params.scheme, x.rows(), x.cols(), [&](Index p, Index r, Index c0, Index c1) {
        lowbit::detail::fake_quantize_block(detail::row_ptr(x, r, c0), c1 - c0, params.at(p), qmin,
                                            qmax, &out(r, c0));
      });
}

/// Fake-quantized x: exactly dequantize(quantize(x, params), params), bit for bit, so training
/// sees the values inference computes. Throws lowbit::Error on non-finite x or unfit params.
inline MatrixXfR fake_quantize(const Eigen::Ref<const MatrixXfR>& x, const QuantParams& params) {
  MatrixXfR out;
  fake_quantize_into(x, params, out);
  return out;
}

/// Writes the straight-through-estimator gradient into `grad_x` (resized; may alias grad_y):
/// grad_y where qmin <= nearbyint(x / scale) + zero_point <= qmax, 0 elsewhere, as
/// torch.fake_quantize_per_tensor_affine / _per_channel_affine backpropagate.
inline void fake_quantize_backward_into(const Eigen::Ref<const MatrixXfR>& grad_y,
                                        const Eigen::Ref<const MatrixXfR>& x,
                                        const QuantParams& params, MatrixXfR& grad_x) {
  detail::check_input(x, params);
  detail::check_grad(grad_y, x);
  grad_x.resize(x.rows(), x.cols());
  const int qmin = params.scheme.qmin(), qmax = params.scheme.qmax();
  detail::for_each_block(params.scheme, x.rows(), x.cols(),
                         [&](Index p, Index r, Index c0, Index c1) {
                           detail::ste_block(detail::row_ptr(grad_y, r, c0), detail::row_ptr(x, r, c0), c1 - c0, params.at(p),
                                             qmin, qmax, &grad_x(r, c0));
                         });
}

/// The straight-through-estimator gradient of fake_quantize with respect to x (PyTorch's mask:
/// the gradient passes where the unclamped code is in [qmin, qmax]). Throws lowbit::Error on
/// mismatched shapes, non-finite x or grad_y, or unfit params.
inline MatrixXfR fake_quantize_backward(const Eigen::Ref<const MatrixXfR>& grad_y,
                                        const Eigen::Ref<const MatrixXfR>& x,
                                        const QuantParams& params) {
  MatrixXfR grad_x;
  fake_quantize_backward_into(grad_y, x, params, grad_x);
  return grad_x;
}

}  // namespace lowbit::qat
