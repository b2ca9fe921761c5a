// format_result.hpp: ptq::FormatResult, a weight matrix quantized into a GGUF block format by one
// of the format-grid algorithms (format_rtn, format_gamma, format_gptq, format_awq).
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/metrics.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/formats/format.hpp>
#include <lowbit/ptq/calibration.hpp>
#include <lowbit/ptq/layer_error.hpp>
#include <lowbit/ptq/result.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace lowbit::ptq {

/// A weight matrix W ([rows, cols], row-major) stored in a GGUF block format: `data` holds the rows
/// one after the other, each formats::row_bytes(type, cols) bytes of blocks exactly as a GGUF
/// tensor of this type stores them (formats::pack of the parameters and codes the algorithm chose
/// on the format's grid, so decoding loses nothing). `report` compares the decoded weights with W.
struct FormatResult {
  formats::Type type = formats::Type::F32;
  Index rows = 0, cols = 0;
  std::vector<uint8_t> data;
  Report report;

  /// The stored bytes (exactly what a GGUF file holds for the tensor).
  uint64_t bytes() const { return data.size(); }
  /// 8 · bytes / weights.
  double bits_per_weight() const {
    return rows * cols > 0 ? 8.0 * double(data.size()) / double(rows * cols) : 0.0;
  }
  /// The weights as decode gives them (bit-identical to ggml's dequantization).
  MatrixXfR dequantize() const { return formats::decode_matrix(type, data.data(), rows, cols); }
};

/// The layer-output error of W_hat relative to that of the layer itself on the calibration
/// statistics: ‖X·(W − Ŵ)ᵀ‖² / ‖X·Wᵀ‖² (0 when the layer's output is zero).
inline double relative_output_error(const Eigen::Ref<const MatrixXfR>& W,
                                    const Eigen::Ref<const MatrixXfR>& W_hat,
                                    const Calibration& calib) {
  lowbit::detail::require_same_shape(W, W_hat);
  detail::require_calibration(calib, W.cols());
  const Eigen::MatrixXf g = calib.gram().cast<float>();
  const double e = detail::output_sse_rows(W - W_hat, g).sum();
  const double ref = detail::output_sse_rows(W, g).sum();
  return ref > 0 ? e / ref : 0.0;
}

namespace detail {

/// The codec of `type` for a weight algorithm, checking that rows of `cols` weights are whole
/// blocks; throws lowbit::Error naming the type (and the supported ones, or the block size).
inline const formats::Format& require_block_format(formats::Type type, Index cols) {
  const formats::Format* f = formats::find_format(type);
  lowbit::detail::require(f != nullptr, "type: {} is not a block format lowbit can quantize to "
                          "(supported: {})", formats::to_string(type),
                          formats::detail::supported_list(false));
  lowbit::detail::require(cols > 0 && cols % f->block_size == 0,
                          "W: rows of {} weights do not fit {} (blocks of {})", cols, f->name,
                          f->block_size);
  return *f;
}

/// Weights >= 0 per column for a clip search: the per-column mean x² (llama.cpp's importance
/// matrix, diag(XᵀX) / tokens), as float.
inline std::vector<float> column_importance(const Calibration& calib) {
  const Eigen::VectorXd imp = calib.importance();
  std::vector<float> out(size_t(imp.size()));
  for (Index c = 0; c < imp.size(); ++c) out[size_t(c)] = float(imp[c]);
  return out;
}

/// A result from its bytes with the report (weight MSE; output error when `calib` is given).
inline FormatResult make_format_result(std::string method, const Eigen::Ref<const MatrixXfR>& W,
                                       formats::Type type, std::vector<uint8_t> data,
                                       const Calibration* calib) {
  FormatResult r;
  r.type = type;
  r.rows = W.rows();
  r.cols = W.cols();
  r.data = std::move(data);
  r.report = make_report(std::move(method), W, r.dequantize(), calib);
  return r;
}

}  // namespace detail
}  // namespace lowbit::ptq
