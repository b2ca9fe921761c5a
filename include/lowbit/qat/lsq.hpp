// lsq.hpp: learned step size (LSQ) and learnable zero point (LSQ+) gradients of fake quantization.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/quantize.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/qat/fake_quantize.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace lowbit::qat {

/// Gradients of a loss through fake_quantize(x, params) with respect to x (the STE mask), and
/// to every block's scale and zero point (one entry per block, in param_index() order).
struct LsqGrads {
  MatrixXfR grad_x;
  std::vector<float> grad_scale;
  std::vector<float> grad_zero_point;
};

/// LSQ's recommended gradient scale for the step size, 1 / sqrt(numel * qmax), as PyTorch's
/// _LearnableFakeQuantize uses with use_grad_scaling (numel: elements of the whole tensor).
inline float lsq_grad_factor(const Scheme& scheme, Index numel) {
  validate(scheme);
  lowbit::detail::require(numel > 0, "numel: expected > 0, got {}", numel);
  lowbit::detail::require(scheme.qmax() > 0, "scheme: expected qmax > 0, got {}", scheme.qmax());
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(numel) * scheme.qmax()));
}

namespace detail {

/// Per-block sums of the scale and zero-point gradients, and the STE gradient for x, for one
/// row segment. With q = nearbyint(x / s) + z and x_fq the fake-quantized value:
///   q < qmin: d/ds = qmin - z, d/dz = -s;  q > qmax: d/ds = qmax - z, d/dz = -s;
///   otherwise d/ds = (x_fq - x) / s, d/dz = 0, d/dx = 1.
inline void lsq_block(const float* gy, const float* x, Index n, AffineParams p, int qmin, int qmax,
                      float* gx, double& g_scale, double& g_zero) noexcept {
  const float inv_scale = 1.0f / p.scale;
  const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
  const float below = static_cast<float>(qmin - p.zero_point);
  const float above = static_cast<float>(qmax - p.zero_point);
  double gs = 0.0, gz = 0.0;
  for (Index i = 0; i < n; ++i) {
    const float q = unclamped_code(x[i], inv_scale, p.zero_point);
    if (q < lo || q > hi) {
      gx[i] = 0.0f;
      gs += static_cast<double>(gy[i] * (q < lo ? below : above));
      gz -= static_cast<double>(gy[i] * p.scale);
    } else {
      gx[i] = gy[i];
      const float x_fq = dequantize_value(static_cast<int32_t>(q), p.scale, p.zero_point);
      gs += static_cast<double>(gy[i] * (x_fq - x[i]) * inv_scale);
    }
  }
  g_scale += gs;
  g_zero += gz;
}

}  // namespace detail

/// As lsq_backward below, into `out` (its buffers are reused; out.grad_x may alias grad_y).
inline void lsq_backward_into(const Eigen::Ref<const MatrixXfR>& grad_y,
                              const Eigen::Ref<const MatrixXfR>& x, const QuantParams& params,
                              float grad_factor, LsqGrads& out) {
  detail::check_input(x, params);
  detail::check_grad(grad_y, x);
  detail::require(std::isfinite(grad_factor) && grad_factor > 0.0f,
                  "grad_factor: expected a finite value > 0, got {}", grad_factor);
  const size_t n = params.scale.size();
  std::vector<double> gs(n, 0.0), gz(n, 0.0);
  out.grad_x.resize(x.rows(), x.cols());
  const int qmin = params.scheme.qmin(), qmax = params.scheme.qmax();
  detail::for_each_block(params.scheme, x.rows(), x.cols(),
                         [&](Index p, Index r, Index c0, Index c1) {
                           const auto i = static_cast<size_t>(p);
                           detail::lsq_block(detail::row_ptr(grad_y, r, c0), detail::row_ptr(x, r, c0), c1 - c0, params.at(p),
                                             qmin, qmax, &out.grad_x(r, c0), gs[i], gz[i]);
                         });
  out.grad_scale.resize(n);
  out.grad_zero_point.resize(n);
  for (size_t i = 0; i < n; ++i) {
    out.grad_scale[i] = static_cast<float>(gs[i] * grad_factor);
    out.grad_zero_point[i] = static_cast<float>(gz[i] * grad_factor);
  }
}

/// Gradients of fake_quantize(x, params) with learnable scale (LSQ, Esser et al. 2019) and zero
/// point (LSQ+), with the semantics of torch._fake_quantize_learnable_per_tensor_affine /
/// _per_channel_affine, extended to per-group params: grad_x is the STE mask times grad_y; each
/// block's scale/zero-point gradient is the sum over its elements of grad_y times
///   (qmin - z, -s) below the range, (qmax - z, -s) above it, ((x_fq - x) / s, 0) inside,
/// times grad_factor (1 leaves them unscaled; lsq_grad_factor() gives LSQ's choice). For
/// symmetric schemes the zero point is fixed at 0: ignore grad_zero_point, as PyTorch does.
/// Throws lowbit::Error on mismatched shapes, non-finite input or gradients, unfit params.
inline LsqGrads lsq_backward(const Eigen::Ref<const MatrixXfR>& grad_y,
                             const Eigen::Ref<const MatrixXfR>& x, const QuantParams& params,
                             float grad_factor = 1.0f) {
  LsqGrads out;
  lsq_backward_into(grad_y, x, params, grad_factor, out);
  return out;
}

}  // namespace lowbit::qat
