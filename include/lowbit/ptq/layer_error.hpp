// layer_error.hpp: how far a quantized weight is from W: weight MSE, importance-weighted MSE and
// layer-output error on calibration statistics.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/metrics.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/ptq/calibration.hpp>

#include <Eigen/Core>

namespace lowbit::ptq {

/// The error the searches (γ, AWQ's α and clip) minimise.
enum class ErrorMetric {
  weight,      ///< mean (W − Ŵ)²
  importance,  ///< mean of (W − Ŵ)² weighted per input channel by diag(XᵀX)/tokens (llama.cpp imatrix)
  output,      ///< ‖X·Wᵀ − X·Ŵᵀ‖² / (tokens · out_features): the layer-output error
};

namespace detail {

/// Sum over rows of Δ_r · G · Δ_rᵀ = ‖X·Δᵀ‖² (per row), with G = XᵀX as float.
inline Eigen::VectorXd output_sse_rows(const Eigen::Ref<const MatrixXfR>& delta,
                                       const Eigen::MatrixXf& gram) {
  const MatrixXfR dg = delta * gram;
  return dg.cwiseProduct(delta).rowwise().sum().cast<double>();
}

}  // namespace detail

/// Layer-output error ‖X·Wᵀ − X·Ŵᵀ‖² / (tokens · out_features) of the calibration set, from its
/// statistics (no tokens needed): Σ_r (W − Ŵ)_r · XᵀX · (W − Ŵ)_rᵀ.
inline double output_error(const Eigen::Ref<const MatrixXfR>& W,
                           const Eigen::Ref<const MatrixXfR>& W_hat, const Calibration& calib) {
  lowbit::detail::require_same_shape(W, W_hat);
  detail::require_calibration(calib, W.cols());
  const MatrixXfR delta = W - W_hat;
  return detail::output_sse_rows(delta, calib.gram().cast<float>()).sum() /
         (double(calib.tokens()) * double(W.rows()));
}

/// Layer-output error ‖X·Wᵀ − X·Ŵᵀ‖² / (tokens · out_features) measured on tokens X
/// ([tokens, in_features]), e.g. held-out data.
inline double output_error(const Eigen::Ref<const MatrixXfR>& W,
                           const Eigen::Ref<const MatrixXfR>& W_hat,
                           const Eigen::Ref<const MatrixXfR>& X) {
  lowbit::detail::require_same_shape(W, W_hat);
  lowbit::detail::require(X.cols() == W.cols(), "X: expected {} columns (W's in_features), got {}x{}",
                          W.cols(), X.rows(), X.cols());
  lowbit::detail::require_finite(X, "X");
  const Eigen::MatrixXd delta = (W.cast<double>() - W_hat.cast<double>());
  return (X.cast<double>() * delta.transpose()).squaredNorm() / (double(X.rows()) * double(W.rows()));
}

/// Importance-weighted MSE: mean over elements of d_c·(W − Ŵ)²_rc with d = diag(XᵀX)/tokens.
inline double importance_error(const Eigen::Ref<const MatrixXfR>& W,
                               const Eigen::Ref<const MatrixXfR>& W_hat, const Calibration& calib) {
  lowbit::detail::require_same_shape(W, W_hat);
  detail::require_calibration(calib, W.cols());
  const Eigen::RowVectorXd d = calib.importance().transpose();
  const Eigen::MatrixXd sq = (W.cast<double>() - W_hat.cast<double>()).array().square().matrix();
  return (sq.array().rowwise() * d.array()).sum() / double(W.size());
}

}  // namespace lowbit::ptq
