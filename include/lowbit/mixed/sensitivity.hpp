// sensitivity.hpp: per-layer sensitivity alpha (activation energy, Hutchinson Hessian trace,
// Fisher, measured loss increase) and the variance sigma^2 of the gamma-clipped weights.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/mixed/candidate.hpp>
#include <lowbit/mixed/layer.hpp>
#include <lowbit/mixed/measure.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace lowbit::mixed {

/// Variance of W after clipping each block (per tensor, row or group of `scheme`) to its range
/// times gamma, as the quantizer sees it: the pooled within-block variance, so a per-group
/// scheme measures the spread each group's scale has to cover.
inline double clipped_variance(const Eigen::Ref<const MatrixXfR>& W, float gamma = 1.0f,
                               const Scheme& scheme = Scheme::per_tensor(8)) {
  lowbit::detail::require_finite(W, "W");
  lowbit::detail::require_gamma(gamma);
  std::vector<float> mins, maxs;
  block_ranges(W, scheme, mins, maxs);
  // Per-tensor blocks span several rows: accumulate per parameter block, then pool.
  const size_t nb = mins.size();
  std::vector<double> s(nb, 0.0), s2(nb, 0.0), count(nb, 0.0);
  lowbit::detail::for_each_block(scheme, W.rows(), W.cols(), [&](Index p, Index r, Index c0, Index c1) {
    const auto b = size_t(p);
    const double lo = double(mins[b]) * gamma, hi = double(maxs[b]) * gamma;
    for (Index c = c0; c < c1; ++c) {
      const double v = std::clamp(double(W(r, c)), lo, hi);
      s[b] += v;
      s2[b] += v * v;
    }
    count[b] += double(c1 - c0);
  });
  double sum_sq = 0.0;
  for (size_t b = 0; b < nb; ++b) sum_sq += s2[b] - s[b] * s[b] / count[b];
  return std::max(0.0, sum_sq / double(W.size()));
}

/// Mean of diag(X^T X): the layer-output error per unit of weight-error energy (the diagonal of
/// the output-error Hessian). Use the same calibration tokens for every layer.
inline double activation_energy(const Eigen::Ref<const Eigen::MatrixXd>& gram) {
  lowbit::detail::require(gram.size() > 0 && gram.rows() == gram.cols(),
                  "gram: expected a non-empty square matrix, got {}x{}", gram.rows(), gram.cols());
  lowbit::detail::require(gram.allFinite(), "gram: expected finite values");
  const double e = gram.diagonal().mean();
  lowbit::detail::require(e >= 0.0, "gram: expected a non-negative diagonal (X^T X), mean is {}", e);
  return e;
}

/// X^T X of activations X [tokens, in_features], accumulated in double.
inline Eigen::MatrixXd gram_of(const Eigen::Ref<const MatrixXfR>& X) {
  lowbit::detail::require_finite(X, "X");
  const Eigen::MatrixXd x = X.cast<double>();
  return x.transpose() * x;
}

/// A layer from its weights and (optional) calibration Gram matrix: sigma2 from
/// clipped_variance(W, gamma, sigma_scheme), alpha = activation_energy(gram) (1 when empty).
inline Layer describe_layer(std::string name, const Eigen::Ref<const MatrixXfR>& W,
                            const Eigen::MatrixXd& gram = {}, float gamma = 1.0f,
                            const Scheme& sigma_scheme = Scheme::per_tensor(8)) {
  Layer l;
  l.name = std::move(name);
  l.rows = W.rows();
  l.cols = W.cols();
  l.sigma2 = clipped_variance(W, gamma, sigma_scheme);
  l.alpha = gram.size() > 0 ? activation_energy(gram) : 1.0;
  l.weight = W;
  l.gram = gram;
  validate(l, 0);
  return l;
}

/// Hessian-vector product callback: returns H v for a vector of the layer's weights.
using HessianVectorProduct = std::function<Eigen::VectorXd(const Eigen::VectorXd& v)>;

/// Hutchinson estimate of trace(H) = E[v^T H v] over `samples` Rademacher vectors v of length
/// `dim` (seeded, reproducible). The layer's alpha is trace / dim, the mean Hessian diagonal.
inline double hutchinson_trace(const HessianVectorProduct& hvp, Index dim, int samples = 32,
                               uint32_t seed = 0) {
  lowbit::detail::require(static_cast<bool>(hvp), "hvp: expected a callable");
  lowbit::detail::require(dim > 0, "dim: expected > 0, got {}", dim);
  lowbit::detail::require(samples > 0, "samples: expected > 0, got {}", samples);
  std::mt19937 rng(seed);
  double sum = 0.0;
  Eigen::VectorXd v(dim);
  for (int s = 0; s < samples; ++s) {
    for (Index i = 0; i < dim; ++i) v[i] = (rng() & 1u) ? 1.0 : -1.0;
    const Eigen::VectorXd hv = hvp(v);
    lowbit::detail::require(hv.size() == dim, "hvp: expected a result of length {}, got {}", dim, hv.size());
    lowbit::detail::require(hv.allFinite(), "hvp: returned non-finite values");
    sum += v.dot(hv);
  }
  return sum / samples;
}

/// Empirical Fisher sensitivity: the mean squared gradient over samples and weights, i.e. the
/// mean diagonal of the Fisher information, from one gradient of the weight per sample/batch.
inline double fisher_sensitivity(const std::vector<MatrixXfR>& gradients) {
  lowbit::detail::require(!gradients.empty(), "gradients: expected at least one gradient");
  double sum = 0.0;
  for (size_t s = 0; s < gradients.size(); ++s) {
    lowbit::detail::require(gradients[s].rows() == gradients[0].rows() &&
                        gradients[s].cols() == gradients[0].cols(),
                    "gradients[{}]: expected {}x{} (as gradients[0]), got {}x{}", s,
                    gradients[0].rows(), gradients[0].cols(), gradients[s].rows(),
                    gradients[s].cols());
    lowbit::detail::require_finite(gradients[s], "gradients[s]");
    sum += gradients[s].cast<double>().squaredNorm();
  }
  return sum / (double(gradients.size()) * double(gradients[0].size()));
}

/// Loss of the model with this layer's weight replaced by `weight` (the rest unchanged).
using LayerLoss = std::function<double(const MatrixXfR& weight)>;

/// Sensitivity from the measured loss increase when this layer alone is stored as `probe`:
/// alpha = max(0, loss(W_hat) - loss(W)) / (n * sigma2 * 2^(-2 b)), so the closed-form model
/// reproduces the measured increase at the probe width. Needs layer.weight and sigma2 > 0.
inline double loss_increase_alpha(const Layer& layer, const LayerLoss& loss,
                                  const Candidate& probe = {3, 128, true, Method::rtn}) {
  validate(layer, 0);
  validate(probe);
  lowbit::detail::require(static_cast<bool>(loss), "loss: expected a callable");
  lowbit::detail::require(!probe.keeps_float(), "probe.bits: expected a quantized width 2..8, got {}",
                  probe.bits);
  lowbit::detail::require(layer.sigma2 > 0.0, "layer ({}).sigma2: expected > 0, got {}", layer.name,
                  layer.sigma2);
  const MatrixXfR w_hat = reconstruct(layer, probe);
  const double base = loss(layer.weight), quantized = loss(w_hat);
  lowbit::detail::require(std::isfinite(base) && std::isfinite(quantized),
                  "loss: expected finite values, got {} and {}", base, quantized);
  return std::max(0.0, quantized - base) /
         (double(layer.weights()) * layer.sigma2 * std::exp2(-2.0 * probe.bits));
}

}  // namespace lowbit::mixed
