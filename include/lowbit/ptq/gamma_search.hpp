// gamma_search.hpp: search_gamma, the paper's clipping factor γ chosen per tensor, channel or
// group by grid search, minimising weight error or layer-output error.
#pragma once

#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/quantize.hpp>
#include <lowbit/core/scheme.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/ptq/calibration.hpp>
#include <lowbit/ptq/layer_error.hpp>
#include <lowbit/ptq/result.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace lowbit::ptq {

/// Options of search_gamma (and of AWQ's clip search).
struct GammaSearchOptions {
  float gamma_min = 0.5f;  ///< smallest γ tried, in (0, 1]
  int steps = 20;          ///< grid points, evenly spaced from 1 down to gamma_min (>= 1)
  /// What is minimised when calibration is given; without it, always the weight MSE.
  ErrorMetric metric = ErrorMetric::output;
};

namespace detail {

inline void validate(const GammaSearchOptions& o) {
  lowbit::detail::require(std::isfinite(o.gamma_min) && o.gamma_min > 0.0f && o.gamma_min <= 1.0f,
                          "options.gamma_min: expected a value in (0, 1], got {}", o.gamma_min);
  lowbit::detail::require(o.steps >= 1, "options.steps: expected >= 1, got {}", o.steps);
  lowbit::detail::require(o.metric == ErrorMetric::weight || o.metric == ErrorMetric::importance ||
                              o.metric == ErrorMetric::output,
                          "options.metric: not an ErrorMetric value");
}

/// γ candidates, 1 first so that ties keep plain min-max.
inline std::vector<float> gamma_grid(const GammaSearchOptions& o) {
  std::vector<float> g(static_cast<size_t>(o.steps), 1.0f);
  for (int k = 1; k < o.steps; ++k)
    g[static_cast<size_t>(k)] = 1.0f - (1.0f - o.gamma_min) * float(k) / float(o.steps - 1);
  return g;
}

/// Address of W(r, c) (Ref<const> has no lvalue access).
inline const float* ptr(const Eigen::Ref<const MatrixXfR>& W, Index r, Index c) {
  return W.data() + r * W.outerStride() + c;
}

/// Per-block min/max of W and the parameters each candidate γ gives a block.
struct GammaCandidates {
  std::vector<float> mins, maxs, grid;
  Scheme scheme;
  AffineParams params(Index block, size_t k) const {
    return lowbit::detail::params_from_range_unchecked(mins[size_t(block)], maxs[size_t(block)],
                                                       scheme, grid[k]);
  }
};

/// W − Ŵ with every block quantized at its candidate index `pick[block]`.
inline MatrixXfR gamma_delta(const Eigen::Ref<const MatrixXfR>& W, const GammaCandidates& cand,
                             const std::vector<size_t>& pick) {
  MatrixXfR delta(W.rows(), W.cols());
  const int qmin = cand.scheme.qmin(), qmax = cand.scheme.qmax();
  lowbit::detail::for_each_block(
      cand.scheme, W.rows(), W.cols(), [&](Index p, Index r, Index c0, Index c1) {
        lowbit::detail::fake_quantize_block(ptr(W, r, c0), c1 - c0, cand.params(p, pick[size_t(p)]),
                                            qmin, qmax, &delta(r, c0));
      });
  delta = W - delta;
  return delta;
}

/// Index into cand.grid of the best γ of every block. `col_weight` (may be empty: all ones)
/// weights squared errors per column for the weight/importance metrics; `gram` (may be null)
/// selects the output metric.
inline std::vector<size_t> search_gamma_blocks(const Eigen::Ref<const MatrixXfR>& W,
                                               const GammaCandidates& cand,
                                               const Eigen::VectorXd& col_weight,
                                               const Eigen::MatrixXf* gram) {
  const Scheme& s = cand.scheme;
  const size_t nk = cand.grid.size();
  const size_t nb = cand.mins.size();
  std::vector<double> cost(nb * nk, 0.0);
  const int qmin = s.qmin(), qmax = s.qmax();
  std::vector<size_t> pick(nb, 0);

  if (gram != nullptr && s.granularity == Granularity::per_group) {
    // Output error couples the groups of a row through XᵀX: one Gauss-Seidel sweep over groups,
    // each group's γ chosen given the others' current error. γ = 1 (the current value) is a
    // candidate, so the row error never grows above RTN's.
    MatrixXfR delta = gamma_delta(W, cand, pick);
    const Index per_row = groups_per_row(s, W.cols());
    Eigen::VectorXd best(W.rows());
    for (Index g = 0; g < per_row; ++g) {
      const Index c0 = g * s.group_size, m = std::min<Index>(s.group_size, W.cols() - c0);
      const Eigen::MatrixXf G_gg = gram->block(c0, c0, m, m);
      MatrixXfR cross = delta * gram->middleCols(c0, m);
      cross.noalias() -= delta.middleCols(c0, m) * G_gg;
      cross *= 2.0f;
      best.setConstant(std::numeric_limits<double>::infinity());
      MatrixXfR dk(W.rows(), m);
      for (size_t k = 0; k < nk; ++k) {
        for (Index r = 0; r < W.rows(); ++r) {
          lowbit::detail::fake_quantize_block(ptr(W, r, c0), m, cand.params(r * per_row + g, k),
                                              qmin, qmax, &dk(r, 0));
          dk.row(r) = W.row(r).segment(c0, m) - dk.row(r);
        }
        const MatrixXfR t = dk * G_gg + cross;
        const Eigen::VectorXd e = t.cwiseProduct(dk).rowwise().sum().cast<double>();
        for (Index r = 0; r < W.rows(); ++r)
          if (e[r] < best[r]) {
            best[r] = e[r];
            pick[size_t(r * per_row + g)] = k;
          }
      }
      for (Index r = 0; r < W.rows(); ++r) {
        lowbit::detail::fake_quantize_block(
            ptr(W, r, c0), m, cand.params(r * per_row + g, pick[size_t(r * per_row + g)]), qmin,
            qmax, &delta(r, c0));
        delta.row(r).segment(c0, m) = W.row(r).segment(c0, m) - delta.row(r).segment(c0, m);
      }
    }
    return pick;
  }

  if (gram != nullptr) {
    // Per tensor or per channel: one block per row (or one in all), so each row's output error
    // depends on its own γ only.
    for (size_t k = 0; k < nk; ++k) {
      const MatrixXfR delta = gamma_delta(W, cand, std::vector<size_t>(nb, k));
      const Eigen::VectorXd e = output_sse_rows(delta, *gram);
      if (s.granularity == Granularity::per_tensor)
        cost[k] = e.sum();
      else
        for (Index r = 0; r < W.rows(); ++r) cost[size_t(r) * nk + k] = e[r];
    }
  } else {
    std::vector<float> buf(size_t(block_width(s, W.cols())));
    lowbit::detail::for_each_block(
        s, W.rows(), W.cols(), [&](Index p, Index r, Index c0, Index c1) {
          for (size_t k = 0; k < nk; ++k) {
            lowbit::detail::fake_quantize_block(ptr(W, r, c0), c1 - c0, cand.params(p, k), qmin,
                                                qmax, buf.data());
            double e = 0.0;
            for (Index c = c0; c < c1; ++c) {
              const double d = double(W(r, c)) - double(buf[size_t(c - c0)]);
              e += (col_weight.size() > 0 ? col_weight[c] : 1.0) * d * d;
            }
            cost[size_t(p) * nk + k] += e;
          }
        });
  }
  for (size_t b = 0; b < nb; ++b)
    for (size_t k = 1; k < nk; ++k)
      if (cost[b * nk + k] < cost[b * nk + pick[b]]) pick[b] = k;
  return pick;
}

/// Parameters of the best grid γ per block, without validation: W finite, scheme valid, calib
/// (may be null) matching W. `gammas` receives the chosen γ of every block.
inline QuantParams search_gamma_params(const Eigen::Ref<const MatrixXfR>& W, const Scheme& scheme,
                                       const Calibration* calib, const GammaSearchOptions& opts,
                                       std::vector<float>& gammas) {
  GammaCandidates cand;
  cand.scheme = scheme;
  cand.grid = gamma_grid(opts);
  block_ranges(W, scheme, cand.mins, cand.maxs);
  Eigen::VectorXd col_weight;
  Eigen::MatrixXf gram;
  const bool output = calib != nullptr && opts.metric == ErrorMetric::output;
  if (calib != nullptr && opts.metric == ErrorMetric::importance) col_weight = calib->importance();
  if (output) gram = calib->gram().cast<float>();
  const std::vector<size_t> pick =
      search_gamma_blocks(W, cand, col_weight, output ? &gram : nullptr);
  gammas.resize(pick.size());
  for (size_t b = 0; b < pick.size(); ++b) gammas[b] = cand.grid[pick[b]];
  return params_from_ranges(cand.mins, cand.maxs, scheme, gammas);
}

/// For every row of `vals` ([rows, m], one parameter block each): the grid γ whose min-max
/// parameters minimise Σ_t weight_t·(v − v̂)² (weight empty: all ones). Writes params and γ.
inline void search_gamma_rows(const Eigen::Ref<const MatrixXfR>& vals,
                              const Eigen::VectorXd& weight, const Scheme& s,
                              const std::vector<float>& grid, std::vector<AffineParams>& params,
                              std::vector<float>& gammas) {
  const Index m = vals.cols();
  const int qmin = s.qmin(), qmax = s.qmax();
  std::vector<float> buf(static_cast<size_t>(m));
  params.resize(size_t(vals.rows()));
  gammas.resize(size_t(vals.rows()));
  for (Index r = 0; r < vals.rows(); ++r) {
    const float lo = std::min(0.0f, vals.row(r).minCoeff()),
                hi = std::max(0.0f, vals.row(r).maxCoeff());
    double best = std::numeric_limits<double>::infinity();
    for (float gamma : grid) {
      const AffineParams p = lowbit::detail::params_from_range_unchecked(lo, hi, s, gamma);
      double e = 0.0;
      if (grid.size() > 1) {
        lowbit::detail::fake_quantize_block(ptr(vals, r, 0), m, p, qmin, qmax, buf.data());
        for (Index t = 0; t < m; ++t) {
          const double d = double(vals(r, t)) - double(buf[size_t(t)]);
          e += (weight.size() > 0 ? weight[t] : 1.0) * d * d;
        }
      }
      if (e < best) {
        best = e;
        params[size_t(r)] = p;
        gammas[size_t(r)] = gamma;
      }
    }
  }
}

/// The search without validation, as a Result.
inline Result search_gamma_unchecked(const Eigen::Ref<const MatrixXfR>& W, const Scheme& scheme,
                                     const Calibration* calib, const GammaSearchOptions& opts,
                                     const char* method) {
  std::vector<float> gammas;
  QuantParams params = search_gamma_params(W, scheme, calib, opts, gammas);
  MatrixXiR codes = quantize(W, params);
  Result res = make_result(method, W, std::move(codes), std::move(params), calib);
  res.gammas = std::move(gammas);
  return res;
}

}  // namespace detail

/// γ-search minimising the weight MSE: each parameter block (the tensor, a row, or a row group)
/// gets the γ of the grid [gamma_min, 1] whose min-max parameters of γ·range quantize it best.
inline Result search_gamma(const Eigen::Ref<const MatrixXfR>& W, const Scheme& scheme,
                           const GammaSearchOptions& opts = {}) {
  lowbit::validate(scheme);
  detail::validate(opts);
  lowbit::detail::require_finite(W, "W");
  return detail::search_gamma_unchecked(W, scheme, nullptr, opts, "gamma");
}

/// γ-search minimising opts.metric on the calibration statistics: the layer-output error
/// ‖X·Wᵀ − X·Ŵᵀ‖² (default; groups of a row are coupled through XᵀX and chosen in one
/// coordinate-descent sweep, so the result is never worse than RTN on the calibration set), the
/// importance-weighted MSE (diag XᵀX), or the plain weight MSE.
inline Result search_gamma(const Eigen::Ref<const MatrixXfR>& W, const Scheme& scheme,
                           const Calibration& calib, const GammaSearchOptions& opts = {}) {
  lowbit::validate(scheme);
  detail::validate(opts);
  lowbit::detail::require_finite(W, "W");
  detail::require_calibration(calib, W.cols());
  return detail::search_gamma_unchecked(W, scheme, &calib, opts, "gamma");
}

/// As above with calibration activations X ([tokens, in]).
inline Result search_gamma(const Eigen::Ref<const MatrixXfR>& W, const Scheme& scheme,
                           const Eigen::Ref<const MatrixXfR>& X,
                           const GammaSearchOptions& opts = {}) {
  lowbit::detail::require_finite(W, "W");
  return search_gamma(W, scheme, detail::calibrate(X, W.cols()), opts);
}

}  // namespace lowbit::ptq
