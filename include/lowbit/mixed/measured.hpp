// measured.hpp: the measured bit allocator: a multiple-choice knapsack over each layer's
// measured (bytes, distortion) candidates, solved by Lagrangian relaxation on the lower convex
// hulls, a greedy fill, and an exact dynamic program over bytes when it fits the cell limit.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/mixed/allocation.hpp>
#include <lowbit/mixed/budget.hpp>
#include <lowbit/mixed/candidate.hpp>
#include <lowbit/mixed/layer.hpp>
#include <lowbit/mixed/measure.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <queue>
#include <utility>
#include <vector>

namespace lowbit::mixed {

/// Options of the measured allocator.
struct MeasuredOptions {
  /// Largest dynamic program (layers x budget cells, after dividing bytes by their common
  /// divisor) solved exactly; beyond it the Lagrangian + greedy answer is returned with its dual
  /// lower bound. 0 turns the exact pass off.
  size_t exact_cells_limit = 20'000'000;
};

/// A multiple-choice knapsack: one (bytes, distortion) item per layer, minimum total distortion
/// with total bytes <= budget.
struct KnapsackSolution {
  std::vector<size_t> choice;  ///< index into each layer's items
  size_t bytes = 0;
  double distortion = 0.0;
  double lower_bound = 0.0;  ///< proven lower bound on the optimum (== distortion when exact)
  bool exact = false;
};

namespace detail {

struct Item {
  size_t bytes;
  double d;
  size_t index;  // into the caller's list
};

// Items neither costlier nor worse than another, by bytes ascending (distortion descending).
inline std::vector<Item> pareto_front(const std::vector<std::pair<size_t, double>>& items) {
  std::vector<Item> all;
  for (size_t k = 0; k < items.size(); ++k) all.push_back({items[k].first, items[k].second, k});
  std::sort(all.begin(), all.end(), [](const Item& a, const Item& b) {
    return a.bytes != b.bytes ? a.bytes < b.bytes : (a.d != b.d ? a.d < b.d : a.index < b.index);
  });
  std::vector<Item> front;
  for (const auto& it : all)
    if (front.empty() || it.d < front.back().d) {
      if (!front.empty() && front.back().bytes == it.bytes) continue;
      front.push_back(it);
    }
  return front;
}

// Lower convex hull of a Pareto front (bytes ascending, distortion descending).
inline std::vector<size_t> lower_hull(const std::vector<Item>& f) {
  std::vector<size_t> h;
  for (size_t k = 0; k < f.size(); ++k) {
    while (h.size() >= 2) {
      const Item& a = f[h[h.size() - 2]];
      const Item& b = f[h.back()];
      const Item& c = f[k];
      // b lies on or above the chord a-c: drop it.
      const double lhs = (b.d - a.d) * double(c.bytes - a.bytes);
      const double rhs = (c.d - a.d) * double(b.bytes - a.bytes);
      if (lhs >= rhs) h.pop_back();
      else break;
    }
    h.push_back(k);
  }
  return h;
}

}  // namespace detail

/// Solves the multiple-choice knapsack. Throws if the cheapest items exceed the budget.
inline KnapsackSolution solve_knapsack(const std::vector<std::vector<std::pair<size_t, double>>>& items,
                                       size_t budget, const MeasuredOptions& options = {}) {
  const size_t L = items.size();
  lowbit::detail::require(L > 0, "items: expected at least one layer");
  std::vector<std::vector<detail::Item>> front(L);
  size_t base = 0;
  for (size_t l = 0; l < L; ++l) {
    lowbit::detail::require(!items[l].empty(), "items[{}]: expected at least one candidate", l);
    for (size_t k = 0; k < items[l].size(); ++k)
      lowbit::detail::require(std::isfinite(items[l][k].second) && items[l][k].second >= 0.0,
                      "items[{}][{}]: expected a finite distortion >= 0, got {}", l, k,
                      items[l][k].second);
    front[l] = detail::pareto_front(items[l]);
    base += front[l][0].bytes;
  }
  lowbit::detail::require(budget >= base,
                  "budget: {} bytes is below the {} bytes of the cheapest candidate of every layer",
                  budget, base);

  // Lagrangian relaxation: walk the hulls' steps by decreasing distortion saved per byte.
  std::vector<std::vector<size_t>> hull(L);
  std::vector<size_t> pos(L, 0);   // index into front[l]
  std::vector<size_t> hpos(L, 0);  // index into hull[l]
  size_t used = base;
  using Step = std::pair<double, size_t>;  // (rate, layer)
  std::priority_queue<Step> steps;
  const auto push_step = [&](size_t l) {
    if (hpos[l] + 1 >= hull[l].size()) return;
    const auto& a = front[l][hull[l][hpos[l]]];
    const auto& b = front[l][hull[l][hpos[l] + 1]];
    steps.push({(a.d - b.d) / double(b.bytes - a.bytes), l});
  };
  for (size_t l = 0; l < L; ++l) {
    hull[l] = detail::lower_hull(front[l]);
    push_step(l);
  }
  double lambda = -1.0;  // the rate of the first step that does not fit
  while (!steps.empty()) {
    const auto [rate, l] = steps.top();
    const size_t next = hull[l][hpos[l] + 1];
    const size_t extra = front[l][next].bytes - front[l][pos[l]].bytes;
    if (used + extra > budget) {
      lambda = rate;
      break;
    }
    steps.pop();
    used += extra;
    pos[l] = next;
    ++hpos[l];
    push_step(l);
  }
  KnapsackSolution s;
  const auto value = [&] {
    double v = 0.0;
    for (size_t l = 0; l < L; ++l) v += front[l][pos[l]].d;
    return v;
  };
  if (lambda < 0.0) {  // every layer at its best candidate: optimal
    s.lower_bound = value();
    s.exact = true;
  } else {
    // Dual bound: sum_l min_k (d + lambda * bytes) - lambda * budget.
    double lb = -lambda * double(budget);
    for (size_t l = 0; l < L; ++l) {
      double m = std::numeric_limits<double>::infinity();
      for (const auto& it : front[l]) m = std::min(m, it.d + lambda * double(it.bytes));
      lb += m;
    }
    s.lower_bound = std::max(0.0, lb);
    // Greedy fill: any upgrade that fits, best distortion saved per byte first.
    for (;;) {
      size_t bl = L, bk = 0;
      double best = 0.0;
      for (size_t l = 0; l < L; ++l)
        for (size_t k = pos[l] + 1; k < front[l].size(); ++k) {
          const size_t extra = front[l][k].bytes - front[l][pos[l]].bytes;
          if (used + extra > budget) break;
          const double rate = (front[l][pos[l]].d - front[l][k].d) / double(extra);
          if (rate > best) best = rate, bl = l, bk = k;
        }
      if (bl == L) break;
      used += front[bl][bk].bytes - front[bl][pos[bl]].bytes;
      pos[bl] = bk;
    }
  }

  // Exact pass: DP over extra bytes (in units of their common divisor).
  if (!s.exact && options.exact_cells_limit > 0) {
    size_t g = 0, max_extra = 0;
    for (size_t l = 0; l < L; ++l) {
      for (const auto& it : front[l]) g = std::gcd(g, it.bytes - front[l][0].bytes);
      max_extra += front[l].back().bytes - front[l][0].bytes;
    }
    g = std::max<size_t>(g, 1);
    const size_t W = std::min(budget - base, max_extra) / g;
    bool fits = W + 1 <= options.exact_cells_limit / L;
    for (size_t l = 0; l < L; ++l) fits = fits && front[l].size() <= 65535;
    if (fits) {
      std::vector<double> prev(W + 1, 0.0), cur(W + 1);
      std::vector<uint16_t> pick(L * (W + 1));
      for (size_t l = 0; l < L; ++l) {
        const size_t b0 = front[l][0].bytes;
        for (size_t j = 0; j <= W; ++j) {
          double best = std::numeric_limits<double>::infinity();
          uint16_t bk = 0;
          for (size_t k = 0; k < front[l].size(); ++k) {
            const size_t e = (front[l][k].bytes - b0) / g;
            if (e > j) break;
            const double v = prev[j - e] + front[l][k].d;
            if (v < best) best = v, bk = uint16_t(k);
          }
          cur[j] = best;
          pick[l * (W + 1) + j] = bk;
        }
        std::swap(prev, cur);
      }
      size_t j = W;
      used = base;
      for (size_t l = L; l-- > 0;) {
        pos[l] = pick[l * (W + 1) + j];
        const size_t e = (front[l][pos[l]].bytes - front[l][0].bytes) / g;
        j -= e;
        used += e * g;
      }
      s.exact = true;
    }
  }
  s.choice.resize(L);
  for (size_t l = 0; l < L; ++l) s.choice[l] = front[l][pos[l]].index;
  s.bytes = used;
  s.distortion = value();
  if (s.exact) s.lower_bound = s.distortion;
  return s;
}

/// Allocates from a measured cost table (see measure_costs()): the choice of one candidate per
/// layer with the least total distortion whose bytes fit the budget. Exact (to the byte) when
/// the dynamic program fits options.exact_cells_limit; otherwise Lagrangian + greedy, with the
/// gap to Allocation::lower_bound reported. Candidates outside a layer's pins are ignored.
inline Allocation allocate_measured(const std::vector<Layer>& layers, const CostTable& table,
                                    const Budget& budget, const MeasuredOptions& options = {}) {
  validate(layers);
  lowbit::detail::require(table.size() == layers.size(), "table: expected {} layers (as layers), got {}",
                  layers.size(), table.size());
  Index total_weights = 0;
  for (const auto& l : layers) total_weights += l.weights();
  std::vector<std::vector<std::pair<size_t, double>>> items(layers.size());
  std::vector<std::vector<size_t>> where(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    for (size_t k = 0; k < table[i].size(); ++k) {
      const CandidateCost& cc = table[i][k];
      validate(cc.candidate);
      lowbit::detail::require(std::isfinite(cc.distortion) && cc.distortion >= 0.0,
                      "table[{}][{}].distortion: expected a finite value >= 0, got {}", i, k,
                      cc.distortion);
      const size_t price = candidate_bytes(cc.candidate, layers[i].rows, layers[i].cols);
      lowbit::detail::require(cc.bytes == price,
                      "table[{}][{}].bytes: expected {} for {} at {}x{}, got {}", i, k, price,
                      label(cc.candidate), layers[i].rows, layers[i].cols, cc.bytes);
      if (!allowed(layers[i], cc.candidate)) continue;
      items[i].push_back({cc.bytes, cc.distortion});
      where[i].push_back(k);
    }
    lowbit::detail::require(!items[i].empty(), "table[{}] ({}): no candidate within the layer's pins [{}, {}]",
                    i, layers[i].name, layers[i].min_bits, layers[i].max_bits);
  }
  const size_t B = budget.to_bytes(total_weights);
  const KnapsackSolution s = solve_knapsack(items, B, options);

  Allocation a;
  a.allocator = "measured";
  a.budget_bytes = B;
  for (size_t i = 0; i < layers.size(); ++i) {
    const CandidateCost& cc = table[i][where[i][s.choice[i]]];
    LayerChoice ch;
    ch.name = layers[i].name;
    ch.rows = layers[i].rows;
    ch.cols = layers[i].cols;
    ch.candidate = cc.candidate;
    ch.bytes = cc.bytes;
    ch.measured = cc.distortion;
    a.layers.push_back(ch);
  }
  detail::update_totals(a);
  a.lower_bound = s.lower_bound;
  a.exact = s.exact;
  return a;
}

/// measure_costs() then allocate_measured().
inline Allocation allocate_measured(const std::vector<Layer>& layers,
                                    const std::vector<Candidate>& candidates, const Budget& budget,
                                    const MeasureFn& measure = measure_output_error,
                                    const MeasuredOptions& options = {}) {
  return allocate_measured(layers, measure_costs(layers, candidates, measure), budget, options);
}

}  // namespace lowbit::mixed
