// calibration.hpp: ptq::Calibration, activation statistics of one layer accumulated over batches.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/types.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lowbit::ptq {

/// What the weight algorithms need to know about a layer's inputs X ([tokens, in_features]),
/// accumulated batch by batch so callers never keep all tokens: the Gram matrix XᵀX (GPTQ's
/// Hessian is 2·XᵀX; the layer-output error of any Ŵ follows from it), per-channel mean |x| (AWQ),
/// per-channel max |x| (SmoothQuant) and the token count. Memory is O(in_features²).
class Calibration {
 public:
  /// Empty statistics for a layer with `features` input features (> 0).
  explicit Calibration(Index features) : features_(features) {
    lowbit::detail::require(features > 0, "features: expected > 0, got {}", features);
    gram_.setZero(features, features);
    sum_abs_.setZero(features);
    max_abs_.setZero(features);
  }

  /// Adds a batch of activations [tokens, features] (finite, non-empty).
  void add(const Eigen::Ref<const MatrixXfR>& x) {
    lowbit::detail::require(x.cols() == features_, "x: expected {} columns (features), got {}x{}",
                    features_, x.rows(), x.cols());
    lowbit::detail::require_finite(x, "x");
    // Float products per chunk of 1024 tokens keep the cost of a float GEMM; the running sum is
    // in double so millions of tokens do not lose precision. With OpenMP, the chunks' products
    // are computed in parallel and summed in chunk order: the same result for any thread count.
    constexpr Index chunk = 1024;
    const Index n_chunks = (x.rows() + chunk - 1) / chunk;
    Index threads = 1;
#ifdef _OPENMP
    if (!omp_in_parallel()) threads = std::max<Index>(1, std::min<Index>(omp_get_max_threads(), n_chunks));
#endif
    std::vector<Eigen::MatrixXf> g(static_cast<size_t>(threads));
    for (Index c0 = 0; c0 < n_chunks; c0 += threads) {
      const Index here = std::min(threads, n_chunks - c0);
#ifdef _OPENMP
#pragma omp parallel for num_threads(int(here)) if (here > 1)
#endif
      for (Index t = 0; t < here; ++t) {
        const Index r0 = (c0 + t) * chunk;
        const auto rows = x.middleRows(r0, std::min(chunk, x.rows() - r0));
        Eigen::MatrixXf& gt = g[size_t(t)];
        gt.setZero(features_, features_);
        gt.selfadjointView<Eigen::Lower>().rankUpdate(rows.transpose());
        gt.triangularView<Eigen::StrictlyUpper>() = gt.transpose();
      }
      // Each column of the running sum gets the chunks in order, whichever thread adds them.
#ifdef _OPENMP
#pragma omp parallel for num_threads(int(here)) if (here > 1)
#endif
      for (Index j = 0; j < features_; ++j)
        for (Index t = 0; t < here; ++t) gram_.col(j) += g[size_t(t)].col(j).cast<double>();
      for (Index t = 0; t < here; ++t) {
        const Index r0 = (c0 + t) * chunk;
        const auto rows = x.middleRows(r0, std::min(chunk, x.rows() - r0));
        sum_abs_ += rows.cwiseAbs().colwise().sum().transpose().cast<double>();
        max_abs_ = max_abs_.cwiseMax(rows.cwiseAbs().colwise().maxCoeff().transpose().cast<double>());
      }
    }
    tokens_ += x.rows();
  }

  /// Statistics from a known Gram matrix XᵀX (symmetric, finite, diagonal >= 0) of `tokens`
  /// tokens. Mean and max |x| are then unknown and set to the per-channel RMS sqrt(diag / tokens).
  static Calibration from_gram(const Eigen::Ref<const Eigen::MatrixXd>& gram, Index tokens) {
    lowbit::detail::require(gram.rows() > 0 && gram.rows() == gram.cols(),
                    "gram: expected a non-empty square matrix, got {}x{}", gram.rows(), gram.cols());
    lowbit::detail::require(tokens > 0, "tokens: expected > 0, got {}", tokens);
    lowbit::detail::require(gram.allFinite(), "gram: expected finite values");
    lowbit::detail::require(gram.isApprox(gram.transpose(), 1e-9) || gram.isZero(),
                    "gram: expected a symmetric matrix");
    lowbit::detail::require(gram.diagonal().minCoeff() >= 0.0, "gram: expected a diagonal >= 0");
    Calibration c(gram.rows());
    c.gram_ = gram;
    c.tokens_ = tokens;
    const Eigen::VectorXd rms = (gram.diagonal() / double(tokens)).cwiseSqrt();
    c.sum_abs_ = rms * double(tokens);
    c.max_abs_ = rms;
    return c;
  }

  Index features() const { return features_; }
  Index tokens() const { return tokens_; }
  bool empty() const { return tokens_ == 0; }

  /// XᵀX summed over every token added (features x features, symmetric).
  const Eigen::MatrixXd& gram() const { return gram_; }
  /// Per-channel mean |x|.
  Eigen::VectorXd mean_abs() const { return sum_abs_ / double(std::max<Index>(tokens_, 1)); }
  /// Per-channel max |x|.
  const Eigen::VectorXd& max_abs() const { return max_abs_; }
  /// Per-channel mean x² = diag(XᵀX) / tokens: llama.cpp's importance matrix.
  Eigen::VectorXd importance() const {
    return gram_.diagonal() / double(std::max<Index>(tokens_, 1));
  }

  /// The statistics of X·diag(factor) (factor finite, one entry per feature), e.g. activations
  /// after AWQ's or SmoothQuant's per-channel division.
  Calibration scaled(const Eigen::Ref<const Eigen::VectorXf>& factor) const {
    lowbit::detail::require(factor.size() == features_, "factor: expected {} entries, got {}", features_,
                    factor.size());
    lowbit::detail::require(factor.allFinite(), "factor: expected finite values");
    const Eigen::VectorXd f = factor.cast<double>();
    Calibration c(*this);
    c.gram_ = f.asDiagonal() * gram_ * f.asDiagonal();
    c.sum_abs_ = sum_abs_.cwiseProduct(f.cwiseAbs());
    c.max_abs_ = max_abs_.cwiseProduct(f.cwiseAbs());
    return c;
  }

 private:
  Index features_ = 0;
  Index tokens_ = 0;
  Eigen::MatrixXd gram_;
  Eigen::VectorXd sum_abs_, max_abs_;
};

namespace detail {

/// Throws unless `calib` holds data for a layer with `in_features` inputs.
inline void require_calibration(const Calibration& calib, Index in_features) {
  lowbit::detail::require(!calib.empty(), "calib: expected at least one batch of activations (empty calibration)");
  lowbit::detail::require(calib.features() == in_features,
          "calib: expected statistics of {} features (W's columns), got {}", in_features,
          calib.features());
}

/// Statistics of one matrix of activations.
inline Calibration calibrate(const Eigen::Ref<const MatrixXfR>& x, Index in_features) {
  lowbit::detail::require(x.cols() == in_features, "X: expected {} columns (W's in_features), got {}x{}",
          in_features, x.rows(), x.cols());
  lowbit::detail::require(x.rows() > 0, "X: expected at least one token (empty calibration)");
  Calibration c(in_features);
  c.add(x);
  return c;
}

}  // namespace detail
}  // namespace lowbit::ptq
