// metrics.hpp: error metrics used across lowbit: MSE, SQNR in dB, max abs error.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>

#include <cmath>
#include <limits>

namespace lowbit {

namespace detail {
inline void require_same_shape(const Eigen::Ref<const MatrixXfR>& ref,
                               const Eigen::Ref<const MatrixXfR>& approx) {
  require(ref.size() > 0, "reference: expected a non-empty matrix");
  require(ref.rows() == approx.rows() && ref.cols() == approx.cols(),
          "approx: expected shape {}x{} (as reference), got {}x{}", ref.rows(), ref.cols(),
          approx.rows(), approx.cols());
}
}  // namespace detail

/// Mean squared error, accumulated in double.
inline double mse(const Eigen::Ref<const MatrixXfR>& ref, const Eigen::Ref<const MatrixXfR>& approx) {
  detail::require_same_shape(ref, approx);
  return (ref.cast<double>() - approx.cast<double>()).squaredNorm() / static_cast<double>(ref.size());
}

/// Signal-to-quantization-noise ratio 10*log10(sum ref^2 / sum (ref - approx)^2) in dB;
/// +inf when the approximation is exact.
inline double sqnr_db(const Eigen::Ref<const MatrixXfR>& ref,
                      const Eigen::Ref<const MatrixXfR>& approx) {
  detail::require_same_shape(ref, approx);
  const double noise = (ref.cast<double>() - approx.cast<double>()).squaredNorm();
  if (noise == 0.0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(ref.cast<double>().squaredNorm() / noise);
}

/// Largest absolute elementwise difference.
inline double max_abs_error(const Eigen::Ref<const MatrixXfR>& ref,
                            const Eigen::Ref<const MatrixXfR>& approx) {
  detail::require_same_shape(ref, approx);
  return (ref.cast<double>() - approx.cast<double>()).cwiseAbs().maxCoeff();
}

}  // namespace lowbit
