// rtn.hpp: round-to-nearest weight quantization with min-max parameters, the PTQ baseline.
#pragma once

#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/quantize.hpp>
#include <lowbit/core/scheme.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/ptq/calibration.hpp>
#include <lowbit/ptq/result.hpp>

namespace lowbit::ptq {

/// Round to nearest: min-max parameters of each block of W ([out, in], finite), codes by core's
/// quantize(). The report has the weight MSE.
inline Result rtn(const Eigen::Ref<const MatrixXfR>& W, const Scheme& scheme) {
  QuantParams params = choose_params(W, scheme);
  MatrixXiR codes = quantize(W, params);
  return detail::make_result("rtn", W, std::move(codes), std::move(params), nullptr);
}

/// As above; the report adds the layer-output error on the calibration statistics.
inline Result rtn(const Eigen::Ref<const MatrixXfR>& W, const Scheme& scheme,
                  const Calibration& calib) {
  lowbit::detail::require_finite(W, "W");
  detail::require_calibration(calib, W.cols());
  QuantParams params = choose_params(W, scheme);
  MatrixXiR codes = quantize(W, params);
  return detail::make_result("rtn", W, std::move(codes), std::move(params), &calib);
}

/// As above with calibration activations X ([tokens, in]).
inline Result rtn(const Eigen::Ref<const MatrixXfR>& W, const Scheme& scheme,
                  const Eigen::Ref<const MatrixXfR>& X) {
  lowbit::detail::require_finite(W, "W");
  return rtn(W, scheme, detail::calibrate(X, W.cols()));
}

}  // namespace lowbit::ptq
