// gptq.hpp: GPTQ (Frantar et al. 2022): column-by-column quantization with error feedback through
// the inverse Hessian of the layer-output error.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/quantize.hpp>
#include <lowbit/core/scheme.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/ptq/calibration.hpp>
#include <lowbit/ptq/result.hpp>

#include <Eigen/Cholesky>
#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace lowbit::ptq {

/// Options of gptq().
struct GptqOptions {
  float damp = 0.01f;      ///< dampening added to H's diagonal, relative to its mean (>= 0)
  Index block_size = 128;  ///< columns per lazy batch update (> 0)
  bool act_order = true;   ///< quantize columns in decreasing order of diag(H)
  /// Extra attempts if H + damp·I cannot be factorised, each with 10x the dampening (>= 0).
  int damp_retries = 2;
};

namespace detail {

inline void validate(const GptqOptions& o) {
  lowbit::detail::require(std::isfinite(o.damp) && o.damp >= 0.0f,
                          "options.damp: expected a finite value >= 0, got {}", o.damp);
  lowbit::detail::require(o.block_size > 0, "options.block_size: expected > 0, got {}",
                          o.block_size);
  lowbit::detail::require(o.damp_retries >= 0, "options.damp_retries: expected >= 0, got {}",
                          o.damp_retries);
}

/// Upper-triangular U with H⁻¹ = UᵀU (GPTQ's "Cholesky of the inverse Hessian"), computed from one
/// Cholesky of H: with J the reversal, J·H·J = L·Lᵀ gives H = R·Rᵀ for the upper R = J·L·J, so
/// H⁻¹ = R⁻ᵀ·R⁻¹ and U = R⁻¹. Dampening `damp` (absolute) is added to the diagonal and grown
/// 10x per retry; throws lowbit::Error when H stays not positive definite.
inline Eigen::MatrixXf inverse_hessian_factor(const Eigen::MatrixXd& H, double damp, int retries) {
  const Index n = H.rows();
  Eigen::MatrixXd reversed = H.reverse();
  for (int attempt = 0;; ++attempt) {
    Eigen::MatrixXd a = reversed;
    a.diagonal().array() += damp;
    Eigen::LLT<Eigen::MatrixXd> llt(a);
    if (llt.info() == Eigen::Success) {
      Eigen::MatrixXd r = Eigen::MatrixXd(llt.matrixL()).reverse();
      Eigen::MatrixXd u = Eigen::MatrixXd::Identity(n, n);
      r.triangularView<Eigen::Upper>().solveInPlace(u);
      if (u.allFinite() && r.diagonal().minCoeff() > 0.0) return u.cast<float>();
    }
    lowbit::detail::require(attempt < retries,
                            "calib: the Hessian 2·XᵀX ({}x{}) is not positive definite even with "
                            "dampening {} added to its diagonal (check the calibration data)",
                            n, n, damp);
    damp *= 10.0;
  }
}

}  // namespace detail

/// GPTQ: quantizes W ([out, in], finite) column by column in the scheme, each column's rounding
/// error spread over the columns not yet quantized through the inverse of H = 2·XᵀX (from
/// `calib`), so that the layer output X·Ŵᵀ stays close to X·Wᵀ. Dampening opts.damp · mean diag(H)
/// keeps H invertible; dead inputs (diag(H) = 0, never active in calibration) are quantized as
/// zero weights; with act_order columns go in decreasing diag(H). Per-group parameters are chosen
/// (min-max of the current, error-updated weights of the group) when the group's first column is
/// reached; per-channel and per-tensor parameters are the min-max ones of W. Throws lowbit::Error
/// when H cannot be factorised even after opts.damp_retries extra dampenings.
inline Result gptq(const Eigen::Ref<const MatrixXfR>& W, const Scheme& scheme,
                   const Calibration& calib, const GptqOptions& opts = {}) {
  lowbit::validate(scheme);
  detail::validate(opts);
  lowbit::detail::require_finite(W, "W");
  detail::require_calibration(calib, W.cols());
  const Index rows = W.rows(), cols = W.cols();

  // Work on Wᵀ so that a column of W is a contiguous row; `order[i]` is the i-th column handled.
  Eigen::MatrixXd H = 2.0 * calib.gram();
  MatrixXfR Wt = W.transpose();
  for (Index c = 0; c < cols; ++c)
    if (H(c, c) == 0.0) {
      H(c, c) = 1.0;
      Wt.row(c).setZero();
    }
  std::vector<Index> order(static_cast<size_t>(cols));
  std::iota(order.begin(), order.end(), Index(0));
  if (opts.act_order)
    std::stable_sort(order.begin(), order.end(),
                     [&](Index a, Index b) { return H(a, a) > H(b, b); });
  Eigen::MatrixXd Hp(cols, cols);
  MatrixXfR Wp(cols, rows);
  for (Index i = 0; i < cols; ++i) {
    Wp.row(i) = Wt.row(order[size_t(i)]);
    for (Index j = 0; j < cols; ++j) Hp(i, j) = H(order[size_t(i)], order[size_t(j)]);
  }
  H.resize(0, 0);
  const double damp = double(opts.damp) * Hp.diagonal().mean();
  const Eigen::MatrixXf U = detail::inverse_hessian_factor(Hp, damp, opts.damp_retries);
  Hp.resize(0, 0);

  const bool grouped = scheme.granularity == Granularity::per_group;
  QuantParams params;
  std::vector<Index> position(static_cast<size_t>(cols));  // position[c]: where column c is in `order`
  for (Index i = 0; i < cols; ++i) position[size_t(order[size_t(i)])] = i;
  if (grouped) {
    const auto n = size_t(param_count(scheme, rows, cols));
    params = QuantParams{scheme, std::vector<float>(n, 1.0f), std::vector<int32_t>(n, 0)};
  } else {
    params = choose_params(Wt.transpose(), scheme);
  }
  const Index per_row = groups_per_row(scheme, cols);
  std::vector<char> group_ready(static_cast<size_t>(per_row), 0);
  const int qmin = scheme.qmin(), qmax = scheme.qmax();

  MatrixXiR codes(rows, cols);
  MatrixXfR err(opts.block_size, rows);
  Eigen::RowVectorXf current(rows);
  std::vector<float> gmin(static_cast<size_t>(rows)), gmax(static_cast<size_t>(rows));
  for (Index i1 = 0; i1 < cols; i1 += opts.block_size) {
    const Index i2 = std::min(cols, i1 + opts.block_size);
    for (Index i = i1; i < i2; ++i) {
      const Index c = order[size_t(i)];
      if (grouped && !group_ready[size_t(c / scheme.group_size)]) {
        // The group's columns as they stand now: those beyond this block still owe the block's
        // lazy update from the columns quantized so far.
        const Index g = c / scheme.group_size;
        const Index c0 = g * scheme.group_size, c1 = std::min(cols, c0 + scheme.group_size);
        std::fill(gmin.begin(), gmin.end(), 0.0f);
        std::fill(gmax.begin(), gmax.end(), 0.0f);
        for (Index cc = c0; cc < c1; ++cc) {
          const Index j = position[size_t(cc)];
          current = Wp.row(j);
          if (j >= i2 && i > i1)
            current.noalias() -= U.block(i1, j, i - i1, 1).transpose() * err.topRows(i - i1);
          for (Index r = 0; r < rows; ++r) {
            gmin[size_t(r)] = std::min(gmin[size_t(r)], current[r]);
            gmax[size_t(r)] = std::max(gmax[size_t(r)], current[r]);
          }
        }
        for (Index r = 0; r < rows; ++r) {
          const AffineParams p = lowbit::detail::params_from_range_unchecked(
              gmin[size_t(r)], gmax[size_t(r)], scheme, 1.0f);
          params.scale[size_t(r * per_row + g)] = p.scale;
          params.zero_point[size_t(r * per_row + g)] = p.zero_point;
        }
        group_ready[size_t(g)] = 1;
      }
      const float d = U(i, i);
      for (Index r = 0; r < rows; ++r) {
        const AffineParams p = params.at(param_index(scheme, cols, r, c));
        const float w = Wp(i, r);
        const int32_t q = quantize_value(w, 1.0f / p.scale, p.zero_point, qmin, qmax);
        codes(r, c) = q;
        err(i - i1, r) = (w - dequantize_value(q, p.scale, p.zero_point)) / d;
      }
      for (Index j = i + 1; j < i2; ++j) Wp.row(j).noalias() -= U(i, j) * err.row(i - i1);
    }
    if (i2 < cols)
      Wp.bottomRows(cols - i2).noalias() -=
          U.block(i1, i2, i2 - i1, cols - i2).transpose() * err.topRows(i2 - i1);
  }
  return detail::make_result("gptq", W, std::move(codes), std::move(params), &calib);
}

/// As above with calibration activations X ([tokens, in]).
inline Result gptq(const Eigen::Ref<const MatrixXfR>& W, const Scheme& scheme,
                   const Eigen::Ref<const MatrixXfR>& X, const GptqOptions& opts = {}) {
  lowbit::detail::require_finite(W, "W");
  return gptq(W, scheme, detail::calibrate(X, W.cols()), opts);
}

}  // namespace lowbit::ptq
