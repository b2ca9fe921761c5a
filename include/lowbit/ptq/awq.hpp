// awq.hpp: AWQ (Lin et al. 2023): activation-aware per-input-channel weight scaling, searched on
// a grid of exponents and folded into the weights, plus a clip (γ) search.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/quantize.hpp>
#include <lowbit/core/scheme.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/ptq/calibration.hpp>
#include <lowbit/ptq/gamma_search.hpp>
#include <lowbit/ptq/layer_error.hpp>
#include <lowbit/ptq/result.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

namespace lowbit::ptq {

/// Options of awq().
struct AwqOptions {
  int grid = 20;  ///< exponents α ∈ {0, 1/grid, ..., (grid−1)/grid} (>= 1); α = 0 is plain RTN
  /// What the α search minimises (weight, importance or output).
  ErrorMetric metric = ErrorMetric::output;
  bool clip_search = true;   ///< then search γ per block on the scaled weights
  GammaSearchOptions clip;   ///< the clip search's grid and metric
  /// The α search measures the error on at most this many output rows, evenly strided (the
  /// scales are shared by all rows, so a subset ranks them alike); 0 = all rows.
  Index search_rows = 512;
};

/// AWQ's result: `quant` holds the codes and parameters of the scaled weights W·diag(s); the
/// activation side divides by s (x / act_divisor, or fold 1/s into the previous operation), so
/// y = (x / s)·Ŵ_sᵀ. quant.report compares effective_weight() with the original W.
struct AwqResult {
  Result quant;
  Eigen::VectorXf act_divisor;  ///< s, one per input feature
  float alpha = 0.0f;           ///< the chosen exponent

  /// Ŵ_s · diag(1/s): the quantized layer expressed on the original inputs.
  MatrixXfR effective_weight() const {
    return quant.dequantize().array().rowwise() / act_divisor.transpose().array();
  }
};

namespace detail {

inline void validate(const AwqOptions& o) {
  lowbit::detail::require(o.grid >= 1, "options.grid: expected >= 1, got {}", o.grid);
  lowbit::detail::require(o.metric == ErrorMetric::weight || o.metric == ErrorMetric::importance ||
                              o.metric == ErrorMetric::output,
                          "options.metric: not an ErrorMetric value");
  lowbit::detail::require(o.search_rows >= 0, "options.search_rows: expected >= 0, got {}",
                          o.search_rows);
  validate(o.clip);
}

/// AWQ's scales mean|x|^α, normalised so that max·min = 1 (tiny means floored at 1e-4 of the
/// largest so that dead channels keep a finite scale).
inline Eigen::VectorXf awq_scales(const Eigen::VectorXd& mean_abs, float alpha) {
  const double top = mean_abs.maxCoeff();
  if (!(top > 0.0) || alpha == 0.0f) return Eigen::VectorXf::Ones(mean_abs.size());
  const Eigen::VectorXd s = mean_abs.cwiseMax(1e-4 * top).array().pow(double(alpha)).matrix();
  return (s / std::sqrt(s.maxCoeff() * s.minCoeff())).cast<float>();
}

/// Error (opts.metric) of RTN on W·diag(s), mapped back by diag(1/s), against W.
inline double awq_error(const Eigen::Ref<const MatrixXfR>& W, const Scheme& scheme,
                        const Eigen::VectorXf& s, ErrorMetric metric, const Eigen::MatrixXf& gram,
                        const Eigen::VectorXd& importance) {
  const MatrixXfR Ws = W.array().rowwise() * s.transpose().array();
  const QuantParams p = choose_params(Ws, scheme);
  const MatrixXfR delta =
      W.array() - dequantize(quantize(Ws, p), p).array().rowwise() / s.transpose().array();
  switch (metric) {
    case ErrorMetric::output: return output_sse_rows(delta, gram).sum();
    case ErrorMetric::importance:
      return (delta.cast<double>().array().square().rowwise() * importance.transpose().array()).sum();
    case ErrorMetric::weight: break;
  }
  return delta.cast<double>().squaredNorm();
}

}  // namespace detail

/// AWQ: searches α on opts.grid for the per-input-channel scales s = mean|x|^α (normalised)
/// minimising opts.metric of RTN applied to W·diag(s) and mapped back, then (opts.clip_search)
/// searches γ per block of the scaled weights on the scaled statistics. α = 0 and γ = 1 are
/// candidates, so on the calibration set AWQ is never worse than RTN (up to the row subset of
/// opts.search_rows).
inline AwqResult awq(const Eigen::Ref<const MatrixXfR>& W, const Scheme& scheme,
                     const Calibration& calib, const AwqOptions& opts = {}) {
  lowbit::validate(scheme);
  detail::validate(opts);
  lowbit::detail::require_finite(W, "W");
  detail::require_calibration(calib, W.cols());

  // Rows the α search looks at.
  const Index stride =
      opts.search_rows == 0 ? 1 : std::max<Index>(1, (W.rows() + opts.search_rows - 1) / opts.search_rows);
  MatrixXfR sub((W.rows() + stride - 1) / stride, W.cols());
  for (Index r = 0; r < sub.rows(); ++r) sub.row(r) = W.row(r * stride);
  Eigen::MatrixXf gram;
  if (opts.metric == ErrorMetric::output) gram = calib.gram().cast<float>();
  const Eigen::VectorXd importance = calib.importance();
  const Eigen::VectorXd mean_abs = calib.mean_abs();

  float best_alpha = 0.0f;
  double best = std::numeric_limits<double>::infinity();
  for (int k = 0; k < opts.grid; ++k) {
    const float alpha = float(k) / float(opts.grid);
    const double e = detail::awq_error(sub, scheme, detail::awq_scales(mean_abs, alpha),
                                       opts.metric, gram, importance);
    if (e < best) {
      best = e;
      best_alpha = alpha;
    }
  }

  AwqResult out;
  out.alpha = best_alpha;
  out.act_divisor = detail::awq_scales(mean_abs, best_alpha);
  const MatrixXfR Ws = W.array().rowwise() * out.act_divisor.transpose().array();
  if (opts.clip_search) {
    const Calibration scaled = calib.scaled(out.act_divisor.cwiseInverse());
    out.quant = detail::search_gamma_unchecked(Ws, scheme, &scaled, opts.clip, "awq");
  } else {
    QuantParams p = choose_params(Ws, scheme);
    MatrixXiR codes = quantize(Ws, p);
    out.quant = Result{std::move(codes), std::move(p), {}, {}};
  }
  out.quant.report = detail::make_report("awq", W, out.effective_weight(), &calib);
  return out;
}

/// As above with calibration activations X ([tokens, in]).
inline AwqResult awq(const Eigen::Ref<const MatrixXfR>& W, const Scheme& scheme,
                     const Eigen::Ref<const MatrixXfR>& X, const AwqOptions& opts = {}) {
  lowbit::detail::require_finite(W, "W");
  return awq(W, scheme, detail::calibrate(X, W.cols()), opts);
}

}  // namespace lowbit::ptq
