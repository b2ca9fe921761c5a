// result.hpp: ptq::Result, what every weight-PTQ method returns: codes, parameters and a report.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/quantize.hpp>
#include <lowbit/core/quantized_matrix.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/ptq/calibration.hpp>
#include <lowbit/ptq/layer_error.hpp>

#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace lowbit::ptq {

/// How well a method did on the layer.
struct Report {
  std::string method;     ///< "rtn", "gamma", "gptq", "awq"
  double weight_mse = 0;  ///< mean (W − Ŵ)² over the weights
  /// ‖X·Wᵀ − X·Ŵᵀ‖² / (tokens · out_features) on the calibration set; NaN without calibration.
  double output_mse = std::numeric_limits<double>::quiet_NaN();
  Index tokens = 0;       ///< calibration tokens the method saw (0 without calibration)
};

/// Quantized weights at a bit width known only at run time: integer codes [out, in] and their
/// parameters (any Scheme of 2..8 bits), plus the report. AWQ's codes are those of the scaled
/// weights (see AwqResult).
struct Result {
  MatrixXiR codes;
  QuantParams params;
  std::vector<float> gammas;  ///< chosen clipping factor per parameter block (search_gamma, AWQ clip)
  Report report;

  int bits() const { return params.scheme.bits; }
  const Scheme& scheme() const { return params.scheme; }

  /// Ŵ = (codes − zero_point) · scale.
  MatrixXfR dequantize() const { return lowbit::dequantize(codes, params); }

  /// The packed matrix for kernels; Bits must equal bits().
  template <int Bits>
  QuantizedMatrix<Bits> to_matrix() const {
    lowbit::detail::require(bits() == Bits, "to_matrix<{}>: the result has {} bits", Bits, bits());
    return QuantizedMatrix<Bits>(codes, params);
  }
};

namespace detail {

/// Fills the report of a result whose dequantized weights are `W_hat`.
inline Report make_report(std::string method, const Eigen::Ref<const MatrixXfR>& W,
                          const Eigen::Ref<const MatrixXfR>& W_hat, const Calibration* calib) {
  Report r;
  r.method = std::move(method);
  r.weight_mse = lowbit::mse(W, W_hat);
  if (calib != nullptr) {
    r.output_mse = output_error(W, W_hat, *calib);
    r.tokens = calib->tokens();
  }
  return r;
}

/// A result from codes and parameters, with its report.
inline Result make_result(std::string method, const Eigen::Ref<const MatrixXfR>& W, MatrixXiR codes,
                          QuantParams params, const Calibration* calib) {
  Result res{std::move(codes), std::move(params), {}, {}};
  res.report = make_report(std::move(method), W, res.dequantize(), calib);
  return res;
}

}  // namespace detail
}  // namespace lowbit::ptq
