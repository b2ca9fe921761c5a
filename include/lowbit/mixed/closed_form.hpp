// closed_form.hpp: the closed-form (rate-distortion) bit allocator: the Lagrange solution of
// min sum n_l*alpha_l*sigma2_l*2^(-2 b_l) s.t. sum n_l*b_l <= B, clamped, then rounded to the
// supported widths by a greedy repair that never exceeds the budget.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/mixed/allocation.hpp>
#include <lowbit/mixed/budget.hpp>
#include <lowbit/mixed/candidate.hpp>
#include <lowbit/mixed/layer.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <tuple>
#include <vector>

namespace lowbit::mixed {

/// Continuous optimum of min sum_l n_l*c_l*2^(-2 b_l) subject to sum_l n_l*b_l = total_bits and
/// lo_l <= b_l <= hi_l: b_l = clamp(theta + log2(c_l)/2, lo_l, hi_l) with theta chosen to meet
/// the budget. Unclamped, b_l = b_mean + (log2 c_l - sum_j (n_j/N) log2 c_j)/2. Layers with
/// c_l = 0 sit at lo_l. Returns hi when the budget exceeds sum n*hi; throws below sum n*lo.
inline std::vector<double> continuous_bits(const std::vector<double>& n,
                                           const std::vector<double>& c,
                                           const std::vector<double>& lo,
                                           const std::vector<double>& hi, double total_bits) {
  const size_t L = n.size();
  lowbit::detail::require(L > 0, "n: expected at least one layer");
  lowbit::detail::require(c.size() == L && lo.size() == L && hi.size() == L,
                  "c/lo/hi: expected {} entries each (as n), got {}/{}/{}", L, c.size(), lo.size(),
                  hi.size());
  double min_total = 0.0, max_total = 0.0;
  for (size_t i = 0; i < L; ++i) {
    lowbit::detail::require(std::isfinite(n[i]) && n[i] > 0.0, "n[{}]: expected a finite value > 0, got {}",
                    i, n[i]);
    lowbit::detail::require(std::isfinite(c[i]) && c[i] >= 0.0,
                    "c[{}] (alpha*sigma2): expected a finite value >= 0, got {}", i, c[i]);
    lowbit::detail::require(std::isfinite(lo[i]) && std::isfinite(hi[i]) && lo[i] <= hi[i],
                    "lo/hi[{}]: expected finite lo <= hi, got [{}, {}]", i, lo[i], hi[i]);
    min_total += n[i] * lo[i];
    max_total += n[i] * hi[i];
  }
  lowbit::detail::require(std::isfinite(total_bits) && total_bits >= min_total * (1.0 - 1e-12),
                  "total_bits: expected at least {} (every layer at its lowest width), got {}",
                  min_total, total_bits);
  if (total_bits >= max_total) return hi;

  std::vector<double> h(L), points;
  for (size_t i = 0; i < L; ++i) {
    h[i] = c[i] > 0.0 ? 0.5 * std::log2(c[i]) : -std::numeric_limits<double>::infinity();
    if (c[i] > 0.0) {
      points.push_back(lo[i] - h[i]);
      points.push_back(hi[i] - h[i]);
    }
  }
  const auto bits_at = [&](double theta, size_t i) {
    return c[i] > 0.0 ? std::clamp(theta + h[i], lo[i], hi[i]) : lo[i];
  };
  const auto total_at = [&](double theta) {
    double t = 0.0;
    for (size_t i = 0; i < L; ++i) t += n[i] * bits_at(theta, i);
    return t;
  };
  std::vector<double> out(L);
  if (points.empty()) {  // nothing is worth a bit: every layer at its lowest width
    for (size_t i = 0; i < L; ++i) out[i] = lo[i];
    return out;
  }
  // total_at is piecewise linear and non-decreasing in theta with kinks at the points; find the
  // segment holding total_bits and solve the linear equation there (the free layers' re-solve).
  std::sort(points.begin(), points.end());
  size_t k = 0;
  while (k + 1 < points.size() && total_at(points[k + 1]) < total_bits) ++k;
  const double t0 = points[k];
  const double t1 = k + 1 < points.size() ? points[k + 1] : t0 + 1.0;
  double free_n = 0.0;
  const double mid = 0.5 * (t0 + t1);
  for (size_t i = 0; i < L; ++i)
    if (c[i] > 0.0 && mid + h[i] > lo[i] && mid + h[i] < hi[i]) free_n += n[i];
  const double theta = free_n > 0.0 ? t0 + (total_bits - total_at(t0)) / free_n : t0;
  for (size_t i = 0; i < L; ++i) out[i] = bits_at(theta, i);
  return out;
}

/// Options of the closed-form allocator.
struct ClosedFormOptions {
  std::vector<int> widths{2, 3, 4, 8};  ///< supported widths; 16/32 = keep in float
  int group_size = 128;                 ///< group size of every quantized layer (0 = per row)
  bool symmetric = true;
  Method method = Method::rtn;  ///< recorded in the result, for measuring or applying it
};

namespace detail {

inline double model_distortion(const Layer& l, const Candidate& c) {
  if (c.keeps_float()) return 0.0;
  return double(l.weights()) * l.alpha * l.sigma2 * std::exp2(-2.0 * c.bits);
}

}  // namespace detail

/// The paper's framework: continuous_bits() with c_l = alpha_l*sigma2_l (bits of overhead,
/// i.e. scales and zero points, taken off the budget first), then rounded down to the supported
/// widths and repaired greedily by the best model-distortion change per byte: downgrades while
/// over budget, then upgrades while one fits. Identical layers (shape, alpha, sigma2, pins) move
/// together, so they always get the same width. Never exceeds the budget; throws when even the
/// lowest allowed widths do not fit.
inline Allocation allocate_closed_form(const std::vector<Layer>& layers, const Budget& budget,
                                       const ClosedFormOptions& options = {}) {
  validate(layers);
  lowbit::detail::require(!options.widths.empty(), "options.widths: expected at least one width");
  std::vector<int> widths = options.widths;
  std::sort(widths.begin(), widths.end());
  widths.erase(std::unique(widths.begin(), widths.end()), widths.end());
  const auto make = [&](int bits) { return Candidate{bits, options.group_size, options.symmetric, options.method}; };
  for (int w : widths) validate(make(w));

  const size_t L = layers.size();
  Index total_weights = 0;
  for (const auto& l : layers) total_weights += l.weights();
  const size_t B = budget.to_bytes(total_weights);

  // Per layer: allowed widths (pins), their prices and model distortions.
  std::vector<std::vector<int>> allowed(L);
  std::vector<std::vector<size_t>> price(L);
  std::vector<std::vector<double>> dist(L);
  size_t min_bytes = 0;
  for (size_t i = 0; i < L; ++i) {
    for (int w : widths)
      if (w >= layers[i].min_bits && w <= layers[i].max_bits) {
        allowed[i].push_back(w);
        price[i].push_back(candidate_bytes(make(w), layers[i].rows, layers[i].cols));
        dist[i].push_back(detail::model_distortion(layers[i], make(w)));
      }
    lowbit::detail::require(!allowed[i].empty(), "layers[{}] ({}): no width of options.widths within its pins [{}, {}]",
                    i, layers[i].name, layers[i].min_bits, layers[i].max_bits);
    min_bytes += price[i][0];
  }
  lowbit::detail::require(B >= min_bytes,
                  "budget: {} bytes is below the {} bytes of every layer at its smallest width",
                  B, min_bytes);

  // Continuous solution; the stored bits beyond n*b (scales, zero points) come off the budget.
  std::vector<double> n(L), c(L), lo(L), hi(L);
  double total_bits = 8.0 * double(B);
  for (size_t i = 0; i < L; ++i) {
    n[i] = double(layers[i].weights());
    c[i] = layers[i].alpha * layers[i].sigma2;
    lo[i] = allowed[i].front();
    hi[i] = allowed[i].back();
    total_bits -= 8.0 * double(price[i][0]) - n[i] * lo[i];
  }
  const std::vector<double> b = continuous_bits(n, c, lo, hi, total_bits);

  // Groups of identical layers move together.
  std::map<std::tuple<Index, Index, double, double, int, int>, size_t> key_to_group;
  std::vector<std::vector<size_t>> groups;
  for (size_t i = 0; i < L; ++i) {
    const auto key = std::make_tuple(layers[i].rows, layers[i].cols, layers[i].alpha,
                                     layers[i].sigma2, layers[i].min_bits, layers[i].max_bits);
    auto it = key_to_group.find(key);
    if (it == key_to_group.end()) {
      it = key_to_group.emplace(key, groups.size()).first;
      groups.emplace_back();
    }
    groups[it->second].push_back(i);
  }
  // Start from the largest allowed width <= the continuous bits.
  std::vector<size_t> level(groups.size(), 0);
  size_t total = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    const size_t i = groups[g].front();
    while (level[g] + 1 < allowed[i].size() && allowed[i][level[g] + 1] <= b[i] + 1e-9) ++level[g];
    total += price[i][level[g]] * groups[g].size();
  }
  // Repair: over budget, take the cheapest distortion increase per byte saved.
  while (total > B) {
    size_t best = groups.size();
    double best_rate = std::numeric_limits<double>::infinity();
    for (size_t g = 0; g < groups.size(); ++g) {
      const size_t i = groups[g].front(), k = level[g];
      if (k == 0 || price[i][k] == price[i][k - 1]) continue;
      const double rate = (dist[i][k - 1] - dist[i][k]) / double(price[i][k] - price[i][k - 1]);
      if (rate < best_rate) best_rate = rate, best = g;
    }
    const size_t i = groups[best].front(), k = level[best];
    total -= (price[i][k] - price[i][k - 1]) * groups[best].size();
    --level[best];
  }
  // Then spend what is left on the best distortion decrease per byte that still fits.
  for (;;) {
    size_t best = groups.size();
    double best_rate = -1.0;
    for (size_t g = 0; g < groups.size(); ++g) {
      const size_t i = groups[g].front(), k = level[g];
      if (k + 1 >= allowed[i].size()) continue;
      const size_t extra = (price[i][k + 1] - price[i][k]) * groups[g].size();
      if (total + extra > B) continue;
      const double rate = (dist[i][k] - dist[i][k + 1]) /
                          double(std::max<size_t>(1, price[i][k + 1] - price[i][k]));
      if (rate > best_rate) best_rate = rate, best = g;
    }
    if (best == groups.size()) break;
    const size_t i = groups[best].front(), k = level[best];
    total += (price[i][k + 1] - price[i][k]) * groups[best].size();
    ++level[best];
  }

  Allocation a;
  a.allocator = "closed-form";
  a.budget_bytes = B;
  a.layers.resize(L);
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t i : groups[g]) {
      LayerChoice& ch = a.layers[i];
      ch.name = layers[i].name;
      ch.rows = layers[i].rows;
      ch.cols = layers[i].cols;
      ch.candidate = make(allowed[i][level[g]]);
      ch.bytes = price[i][level[g]];
      ch.continuous_bits = b[i];
      ch.predicted = dist[i][level[g]];
    }
  detail::update_totals(a);
  return a;
}

}  // namespace lowbit::mixed
