// measure.hpp: measured distortion of storing a layer as a candidate (weighted output error on
// calibration data), the per-layer cost table the measured allocator solves, and measuring an
// allocation.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/metrics.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/quantize.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/mixed/allocation.hpp>
#include <lowbit/mixed/candidate.hpp>
#include <lowbit/mixed/layer.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace lowbit::mixed {

/// Distortion of storing `layer` as `candidate`; must be finite and >= 0. Plug in your own
/// (e.g. perplexity increase) in place of measure_output_error.
using MeasureFn = std::function<double(const Layer& layer, const Candidate& candidate)>;

/// One priced, measured candidate of one layer.
struct CandidateCost {
  Candidate candidate;
  size_t bytes = 0;
  double distortion = 0.0;
};

/// Per layer, the candidates it may take (pins applied) with their bytes and distortion.
using CostTable = std::vector<std::vector<CandidateCost>>;

/// Whether the layer's pins allow the candidate's width.
inline bool allowed(const Layer& l, const Candidate& c) {
  return c.bits >= l.min_bits && c.bits <= l.max_bits;
}

/// trace((W - W_hat) G (W - W_hat)^T): the summed squared layer-output error over the
/// calibration tokens whose X^T X is G; the plain squared weight error when G is empty.
inline double weighted_output_error(const Eigen::Ref<const MatrixXfR>& W,
                                    const Eigen::Ref<const MatrixXfR>& W_hat,
                                    const Eigen::MatrixXd& gram = {}) {
  lowbit::detail::require_same_shape(W, W_hat);
  lowbit::detail::require(W.allFinite() && W_hat.allFinite(), "W/W_hat: expected finite values");
  const Eigen::MatrixXd d = (W.cast<double>() - W_hat.cast<double>());
  if (gram.size() == 0) return d.squaredNorm();
  lowbit::detail::require(gram.rows() == W.cols() && gram.cols() == W.cols(),
                  "gram: expected {}x{} (in x in), got {}x{}", W.cols(), W.cols(), gram.rows(),
                  gram.cols());
  return std::max(0.0, (d * gram).cwiseProduct(d).sum());
}

/// The weights `layer` would hold if stored as `c` (dequantized), rounded by c.method.
inline MatrixXfR reconstruct(const Layer& layer, const Candidate& c) {
  validate(layer, 0);
  validate(c);
  lowbit::detail::require(layer.weight.size() > 0, "layer ({}).weight: needed to quantize, got none",
                  layer.name);
  if (c.keeps_float()) return layer.weight;
  const Scheme s = scheme_of(c);
  switch (c.method) {
    case Method::rtn: {
      const QuantParams p = choose_params(layer.weight, s);
      return dequantize(quantize(layer.weight, p), p);
    }
    case Method::gamma_search:
    case Method::gptq: break;
  }
  lowbit::detail::fail("candidate.method: {} is not available in this build", to_string(c.method));
}

/// The built-in measurement: weighted_output_error of reconstruct(layer, c) with layer.gram.
inline double measure_output_error(const Layer& layer, const Candidate& c) {
  if (c.keeps_float()) return 0.0;
  return weighted_output_error(layer.weight, reconstruct(layer, c), layer.gram);
}

/// Prices and measures every candidate each layer's pins allow. Throws if a layer allows none.
inline CostTable measure_costs(const std::vector<Layer>& layers,
                               const std::vector<Candidate>& candidates,
                               const MeasureFn& measure = measure_output_error) {
  validate(layers);
  lowbit::detail::require(!candidates.empty(), "candidates: expected at least one candidate");
  for (const auto& c : candidates) validate(c);
  lowbit::detail::require(static_cast<bool>(measure), "measure: expected a callable");
  for (size_t i = 0; i < layers.size(); ++i) {
    bool any = false;
    for (const auto& c : candidates) any = any || allowed(layers[i], c);
    lowbit::detail::require(any, "layers[{}] ({}): no candidate width within its pins [{}, {}]", i,
                    layers[i].name, layers[i].min_bits, layers[i].max_bits);
  }
  CostTable table(layers.size());
  for (size_t i = 0; i < layers.size(); ++i)
    for (const auto& c : candidates) {
      if (!allowed(layers[i], c)) continue;
      const double d = measure(layers[i], c);
      lowbit::detail::require(std::isfinite(d) && d >= 0.0,
                      "measure: expected a finite distortion >= 0 for layers[{}] ({}) as {}, got {}",
                      i, layers[i].name, label(c), d);
      table[i].push_back({c, candidate_bytes(c, layers[i].rows, layers[i].cols), d});
    }
  return table;
}

/// Fills each layer's `measured` distortion (and the total) of an allocation.
inline void measure_allocation(const std::vector<Layer>& layers, Allocation& a,
                               const MeasureFn& measure = measure_output_error) {
  validate(layers);
  lowbit::detail::require(a.layers.size() == layers.size(),
                  "allocation: expected {} layers (as layers), got {}", layers.size(),
                  a.layers.size());
  lowbit::detail::require(static_cast<bool>(measure), "measure: expected a callable");
  std::vector<double> d(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    d[i] = measure(layers[i], a.layers[i].candidate);
    lowbit::detail::require(std::isfinite(d[i]) && d[i] >= 0.0,
                    "measure: expected a finite distortion >= 0 for layers[{}], got {}", i, d[i]);
  }
  for (size_t i = 0; i < layers.size(); ++i) a.layers[i].measured = d[i];
  detail::update_totals(a);
}

}  // namespace lowbit::mixed
