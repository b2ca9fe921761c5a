// format_rtn.hpp: format_rtn, a GGUF format's own rounding of a weight matrix (plain, or
// weighted by the per-column mean x² as llama.cpp's importance matrix): the format-grid baseline.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/formats/format.hpp>
#include <lowbit/ptq/calibration.hpp>
#include <lowbit/ptq/format_result.hpp>

#include <vector>

namespace lowbit::ptq {

/// Options of format_rtn().
struct FormatRtnOptions {
  /// Weight every squared error by its column's mean x² (Calibration::importance(), llama.cpp's
  /// imatrix) in the format's clipping search (formats::quantize_row with importance); false is
  /// the format's plain rounding (min-max / abs-max, as ggml's reference quantizers).
  bool weighted = false;
};

/// The format's plain rounding of W ([rows, cols], finite; cols a multiple of the block): exactly
/// formats::quantize_matrix(type, W). The report has the weight MSE. Throws lowbit::Error for a
/// type without a block codec, rows that are not whole blocks or non-finite weights.
inline FormatResult format_rtn(const Eigen::Ref<const MatrixXfR>& W, formats::Type type) {
  detail::require_block_format(type, W.cols());
  lowbit::detail::require_finite(W, "W");
  return detail::make_format_result("rtn", W, type, formats::quantize_matrix(type, W), nullptr);
}

/// As above with the calibration statistics of the layer's inputs: the report adds the output
/// error, and with opts.weighted the rounding minimises the importance-weighted error.
inline FormatResult format_rtn(const Eigen::Ref<const MatrixXfR>& W, formats::Type type,
                               const Calibration& calib, const FormatRtnOptions& opts = {}) {
  detail::require_block_format(type, W.cols());
  lowbit::detail::require_finite(W, "W");
  detail::require_calibration(calib, W.cols());
  std::vector<float> imp;
  if (opts.weighted) imp = detail::column_importance(calib);
  return detail::make_format_result(opts.weighted ? "rtn_imatrix" : "rtn", W, type,
                                    formats::quantize_matrix(type, W, opts.weighted ? imp.data() : nullptr),
                                    &calib);
}

}  // namespace lowbit::ptq
