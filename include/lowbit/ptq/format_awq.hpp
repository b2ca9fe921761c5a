// format_awq.hpp: AWQ into a GGUF block format: per-input-channel scales s = mean|x|^α searched
// for one or several weights that read the same input (q/k/v, gate/up), optionally tied across
// channels (grouped-query attention), then W·diag(s) quantized on the format's grid.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/formats/format.hpp>
#include <lowbit/ptq/awq.hpp>
#include <lowbit/ptq/calibration.hpp>
#include <lowbit/ptq/format_gamma.hpp>
#include <lowbit/ptq/format_result.hpp>
#include <lowbit/ptq/format_rtn.hpp>
#include <lowbit/ptq/layer_error.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <limits>
#include <vector>

namespace lowbit::ptq {

/// Options of format_awq_scales() and format_awq().
struct FormatAwqOptions {
  int grid = 20;  ///< exponents α ∈ {0, 1/grid, ..., (grid−1)/grid} (>= 1); α = 0 is s = 1
  /// The α search measures each weight's output error on at most this many rows, evenly strided
  /// (the scales are shared by all rows, so a subset ranks them alike); 0 = all rows.
  Index search_rows = 512;
  /// Then quantize W·diag(s) by format_gamma on the scaled statistics (output error); false: the
  /// format's plain rounding of W·diag(s).
  bool clip_search = true;
  FormatGammaOptions clip;
};

/// The scales AWQ chose: the layer computes (x / s)·(W·diag(s))ᵀ, so the operation before it must
/// divide its output by s (a norm's gain, the rows of the weight producing x).
struct AwqScales {
  Eigen::VectorXf scale;  ///< s, one per input feature (normalised: max·min = 1)
  float alpha = 0;        ///< the chosen exponent
  double error = 0;       ///< the summed (estimated) output error at alpha
  double error_plain = 0; ///< the same at α = 0 (no scaling)
};

/// What format_awq(W, type, calib) returns: the quantized W·diag(s) and s.
struct FormatAwqResult {
  FormatResult quant;           ///< W·diag(s) in the format; report against the original W
  Eigen::VectorXf act_divisor;  ///< s
  float alpha = 0;

  /// Ŵ_s · diag(1/s): the quantized layer on its original inputs.
  MatrixXfR effective_weight() const {
    return quant.dequantize().array().rowwise() / act_divisor.transpose().array();
  }
};

namespace detail {

inline void validate(const FormatAwqOptions& o) {
  lowbit::detail::require(o.grid >= 1, "options.grid: expected >= 1, got {}", o.grid);
  lowbit::detail::require(o.search_rows >= 0, "options.search_rows: expected >= 0, got {}",
                          o.search_rows);
  validate(o.clip);
}

/// Σ over the (strided) rows of ‖X·(W − Q(W·diag(s))·diag(1/s))ᵀ‖², scaled by rows / rows used,
/// with Q the format's plain rounding.
inline double awq_format_error(const Eigen::Ref<const MatrixXfR>& W, formats::Type type,
                               const Eigen::VectorXf& s, const Eigen::MatrixXf& gram,
                               Index search_rows) {
  const Index stride =
      search_rows == 0 ? 1 : std::max<Index>(1, (W.rows() + search_rows - 1) / search_rows);
  MatrixXfR sub((W.rows() + stride - 1) / stride, W.cols());
  for (Index r = 0; r < sub.rows(); ++r) sub.row(r) = W.row(r * stride);
  const MatrixXfR Ws = sub.array().rowwise() * s.transpose().array();
  const std::vector<uint8_t> q = formats::quantize_matrix(type, Ws);
  const MatrixXfR back = formats::decode_matrix(type, q.data(), Ws.rows(), Ws.cols()).array().rowwise() /
                         s.transpose().array();
  const MatrixXfR delta = sub - back;
  return output_sse_rows(delta, gram).sum() * double(W.rows()) / double(sub.rows());
}

}  // namespace detail

/// AWQ's scale search for `weights` (each [out_k, in], finite, in a multiple of the block of its
/// `types[k]`) that all read the input described by `calib`: s = mean|x|^α (normalised to
/// max·min = 1, tiny means floored at 1e-4 of the largest) for α on opts.grid, the α minimising
/// the summed output error of the plainly rounded W_k·diag(s) mapped back by diag(1/s). `tie`
/// (empty, or one group id per input feature): features of a group share one scale, made from
/// the mean of their mean|x| (attn_output's inputs under grouped-query attention, whose scale is
/// folded into attn_v's rows shared by several query heads). α = 0 (s = 1) is a candidate.
/// Throws lowbit::Error for bad input.
inline AwqScales format_awq_scales(const std::vector<const MatrixXfR*>& weights,
                                   const std::vector<formats::Type>& types,
                                   const Calibration& calib, const FormatAwqOptions& opts = {},
                                   const std::vector<Index>& tie = {}) {
  detail::validate(opts);
  lowbit::detail::require(!weights.empty(), "weights: expected at least one weight");
  lowbit::detail::require(types.size() == weights.size(),
                          "types: expected one type per weight ({}), got {}", weights.size(),
                          types.size());
  const Index n = calib.features();
  for (size_t k = 0; k < weights.size(); ++k) {
    lowbit::detail::require(weights[k] != nullptr, "weights[{}]: expected a matrix, got nullptr", k);
    detail::require_block_format(types[k], weights[k]->cols());
    lowbit::detail::require_finite(*weights[k], "weights[k]");
    detail::require_calibration(calib, weights[k]->cols());
  }
  Eigen::VectorXd mean_abs = calib.mean_abs();
  if (!tie.empty()) {
    lowbit::detail::require(Index(tie.size()) == n, "tie: expected {} group ids (one per input "
                            "feature), got {}", n, tie.size());
    Index groups = 0;
    for (Index g : tie) {
      lowbit::detail::require(g >= 0 && g < n, "tie: group id {} is outside 0..{}", g, n - 1);
      groups = std::max(groups, g + 1);
    }
    Eigen::VectorXd sum = Eigen::VectorXd::Zero(groups), count = Eigen::VectorXd::Zero(groups);
    for (Index c = 0; c < n; ++c) {
      sum[tie[size_t(c)]] += mean_abs[c];
      count[tie[size_t(c)]] += 1.0;
    }
    for (Index c = 0; c < n; ++c) mean_abs[c] = sum[tie[size_t(c)]] / count[tie[size_t(c)]];
  }
  const Eigen::MatrixXf gram = calib.gram().cast<float>();
  AwqScales best;
  best.error = std::numeric_limits<double>::infinity();
  for (int k = 0; k < opts.grid; ++k) {
    const float alpha = float(k) / float(opts.grid);
    const Eigen::VectorXf s = detail::awq_scales(mean_abs, alpha);
    double e = 0;
    for (size_t w = 0; w < weights.size(); ++w)
      e += detail::awq_format_error(*weights[w], types[w], s, gram, opts.search_rows);
    if (k == 0) best.error_plain = e;
    if (e < best.error) {
      best.error = e;
      best.alpha = alpha;
      best.scale = s;
    }
  }
  return best;
}

/// W·diag(s) in the format (the activation side divides by s): by format_gamma on the statistics
/// of X·diag(1/s) (opts.clip_search) or the format's plain rounding. The bytes are those of
/// W·diag(s); the report compares Ŵ_s·diag(1/s) with W on `calib`.
inline FormatResult format_awq(const Eigen::Ref<const MatrixXfR>& W, formats::Type type,
                               const Calibration& calib, const Eigen::VectorXf& s,
                               const FormatAwqOptions& opts = {}) {
  detail::require_block_format(type, W.cols());
  detail::validate(opts);
  lowbit::detail::require_finite(W, "W");
  detail::require_calibration(calib, W.cols());
  lowbit::detail::require(s.size() == W.cols() && s.allFinite() && (s.array() > 0).all(),
                          "s: expected {} finite scales > 0 (one per input feature)", W.cols());
  const MatrixXfR Ws = W.array().rowwise() * s.transpose().array();
  const Calibration scaled = calib.scaled(s.cwiseInverse());
  FormatResult r = opts.clip_search ? format_gamma(Ws, type, scaled, opts.clip)
                                    : format_rtn(Ws, type, scaled);
  const MatrixXfR eff = r.dequantize().array().rowwise() / s.transpose().array();
  r.report = detail::make_report("awq", W, eff, &calib);
  return r;
}

/// AWQ of one weight: format_awq_scales({&W}) then format_awq with those scales.
inline FormatAwqResult format_awq(const Eigen::Ref<const MatrixXfR>& W, formats::Type type,
                                  const Calibration& calib, const FormatAwqOptions& opts = {}) {
  const MatrixXfR w = W;
  const AwqScales s = format_awq_scales({&w}, {type}, calib, opts);
  FormatAwqResult out;
  out.quant = format_awq(W, type, calib, s.scale, opts);
  out.act_divisor = s.scale;
  out.alpha = s.alpha;
  return out;
}

}  // namespace lowbit::ptq
