// smoothquant.hpp: SmoothQuant (Xiao et al. 2022): migrates activation outliers into the weights
// with per-input-channel scales so that both quantize well at W8A8.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/ptq/calibration.hpp>

#include <cmath>

namespace lowbit::ptq {

/// Smoothed layer: X·Wᵀ = (X / s)·(W·diag(s))ᵀ exactly; quantize `weight` and the divided
/// activations instead of W and X.
struct SmoothResult {
  MatrixXfR weight;             ///< W·diag(s), [out, in]
  Eigen::VectorXf act_divisor;  ///< s, one per input feature: activations become x / s
  float alpha = 0.5f;           ///< the migration strength used
};

/// SmoothQuant's scales s_j = max|X_j|^α / max|W_{:,j}|^(1−α) from the calibration's per-channel
/// max |x| (channels never active or with all-zero weights keep s_j = 1). alpha in [0, 1].
inline SmoothResult smoothquant(const Eigen::Ref<const MatrixXfR>& W, const Calibration& calib,
                                float alpha = 0.5f) {
  lowbit::detail::require(std::isfinite(alpha) && alpha >= 0.0f && alpha <= 1.0f,
                          "alpha: expected a value in [0, 1], got {}", alpha);
  lowbit::detail::require_finite(W, "W");
  detail::require_calibration(calib, W.cols());
  SmoothResult out;
  out.alpha = alpha;
  out.act_divisor.resize(W.cols());
  for (Index j = 0; j < W.cols(); ++j) {
    const double xmax = calib.max_abs()[j];
    const double wmax = W.col(j).cwiseAbs().maxCoeff();
    const double s = std::pow(xmax, double(alpha)) / std::pow(wmax, 1.0 - double(alpha));
    const auto sf = static_cast<float>(s);
    out.act_divisor[j] = (xmax > 0.0 && wmax > 0.0 && std::isfinite(sf) && sf > 0.0f) ? sf : 1.0f;
  }
  out.weight = W.array().rowwise() * out.act_divisor.transpose().array();
  return out;
}

/// As above with calibration activations X ([tokens, in]).
inline SmoothResult smoothquant(const Eigen::Ref<const MatrixXfR>& W,
                                const Eigen::Ref<const MatrixXfR>& X, float alpha = 0.5f) {
  lowbit::detail::require_finite(W, "W");
  return smoothquant(W, detail::calibrate(X, W.cols()), alpha);
}

}  // namespace lowbit::ptq
