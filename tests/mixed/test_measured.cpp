// test_measured.cpp: the measured allocator (multiple-choice knapsack) against brute force, its
// Lagrangian bound when the exact pass is off, pins, and rejected inputs.
#include <lowbit/mixed/measured.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <utility>
#include <vector>

using namespace lowbit;
using namespace lowbit::mixed;

namespace {

using Items = std::vector<std::vector<std::pair<size_t, double>>>;

// Exhaustive minimum over every combination; returns +inf when nothing fits.
double brute_force(const Items& items, size_t budget) {
  const size_t L = items.size();
  std::vector<size_t> k(L, 0);
  double best = std::numeric_limits<double>::infinity();
  for (;;) {
    size_t bytes = 0;
    double d = 0.0;
    for (size_t l = 0; l < L; ++l) bytes += items[l][k[l]].first, d += items[l][k[l]].second;
    if (bytes <= budget) best = std::min(best, d);
    size_t l = 0;
    while (l < L && ++k[l] == items[l].size()) k[l++] = 0;
    if (l == L) return best;
  }
}

Items random_items(std::mt19937& rng, size_t L, size_t K) {
  std::uniform_int_distribution<size_t> bytes(1, 60);
  std::uniform_real_distribution<double> d(0.0, 10.0);
  Items items(L);
  for (auto& layer : items)
    for (size_t k = 0; k < K; ++k) layer.push_back({bytes(rng), d(rng)});
  return items;
}

void check_solution(const Items& items, size_t budget, const KnapsackSolution& s) {
  size_t bytes = 0;
  double d = 0.0;
  REQUIRE(s.choice.size() == items.size());
  for (size_t l = 0; l < items.size(); ++l) {
    REQUIRE(s.choice[l] < items[l].size());
    bytes += items[l][s.choice[l]].first;
    d += items[l][s.choice[l]].second;
  }
  CHECK(bytes == s.bytes);
  CHECK(bytes <= budget);
  CHECK(d == Approx(s.distortion).epsilon(1e-12));
}

}  // namespace

TEST_CASE("solve_knapsack equals brute force on random small problems") {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 400; ++trial) {
    const size_t L = 1 + trial % 8, K = 1 + (trial / 8) % 4;
    const Items items = random_items(rng, L, K);
    size_t lo = 0, hi = 0;
    for (const auto& l : items) {
      size_t mn = SIZE_MAX, mx = 0;
      for (const auto& it : l) mn = std::min(mn, it.first), mx = std::max(mx, it.first);
      lo += mn, hi += mx;
    }
    const size_t budget = lo + std::uniform_int_distribution<size_t>(0, hi - lo + 5)(rng);
    const double best = brute_force(items, budget);

    const KnapsackSolution exact = solve_knapsack(items, budget);
    check_solution(items, budget, exact);
    CHECK(exact.exact);
    CHECK(exact.distortion == Approx(best).epsilon(1e-12).margin(1e-12));
    CHECK(exact.lower_bound == exact.distortion);

    MeasuredOptions no_dp;
    no_dp.exact_cells_limit = 0;
    const KnapsackSolution lag = solve_knapsack(items, budget, no_dp);
    check_solution(items, budget, lag);
    CHECK(lag.distortion >= best - 1e-9);
    CHECK(lag.lower_bound <= best + 1e-9);
    if (!lag.exact) CHECK(lag.lower_bound <= lag.distortion + 1e-9);
  }
}

TEST_CASE("solve_knapsack: the Lagrangian point is optimal when the budget lands on the hull") {
  // Convex curves; a budget equal to a sum of hull points leaves no gap.
  const Items items{{{10, 8.0}, {20, 3.0}, {40, 1.0}}, {{10, 5.0}, {20, 1.0}, {40, 0.5}}};
  MeasuredOptions no_dp;
  no_dp.exact_cells_limit = 0;
  const KnapsackSolution s = solve_knapsack(items, 40, no_dp);
  CHECK(s.distortion == Approx(4.0));
  CHECK(s.bytes == 40);
  const KnapsackSolution all = solve_knapsack(items, 1000, no_dp);
  CHECK(all.exact);
  CHECK(all.distortion == Approx(1.5));
}

TEST_CASE("allocate_measured equals brute force with real prices and respects pins") {
  std::mt19937 rng(12);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const std::vector<Candidate> cands{{2, 32, true, Method::rtn},
                                     {3, 64, false, Method::rtn},
                                     {4, 32, true, Method::rtn},
                                     {8, 0, true, Method::rtn}};
  for (int trial = 0; trial < 60; ++trial) {
    const size_t L = 1 + trial % 8;
    std::vector<Layer> layers(L);
    CostTable table(L);
    Items items(L);
    for (size_t i = 0; i < L; ++i) {
      layers[i].name = "l" + std::to_string(i);
      layers[i].rows = 4 + Index(u(rng) * 60);
      layers[i].cols = 4 + Index(u(rng) * 200);
      if (u(rng) < 0.2) layers[i].min_bits = 3;
      for (const auto& c : cands) {
        const double d = double(layers[i].weights()) * std::exp2(-2.0 * c.bits) * (0.5 + u(rng));
        const size_t b = candidate_bytes(c, layers[i].rows, layers[i].cols);
        table[i].push_back({c, b, d});
        if (c.bits >= layers[i].min_bits) items[i].push_back({b, d});
      }
    }
    size_t lo = 0, hi = 0;
    for (const auto& l : items) {
      size_t mn = SIZE_MAX, mx = 0;
      for (const auto& it : l) mn = std::min(mn, it.first), mx = std::max(mx, it.first);
      lo += mn, hi += mx;
    }
    const size_t budget = lo + size_t(u(rng) * double(hi - lo));
    const Allocation a = allocate_measured(layers, table, Budget::bytes(budget));
    CHECK(a.exact);
    CHECK(a.total_bytes <= budget);
    CHECK(a.measured_total == Approx(brute_force(items, budget)).epsilon(1e-12));
    for (size_t i = 0; i < L; ++i) {
      CHECK(a.layers[i].candidate.bits >= layers[i].min_bits);
      CHECK(a.layers[i].bytes == candidate_bytes(a.layers[i].candidate, layers[i].rows, layers[i].cols));
    }
  }
}

TEST_CASE("allocate_measured rejects bad input") {
  std::vector<Layer> layers(2);
  for (auto& l : layers) l.rows = 8, l.cols = 16;
  const Candidate c4{4, 16, true, Method::rtn}, c8{8, 16, true, Method::rtn};
  const size_t b4 = candidate_bytes(c4, 8, 16), b8 = candidate_bytes(c8, 8, 16);
  CostTable table{{{c4, b4, 2.0}, {c8, b8, 1.0}}, {{c4, b4, 2.0}, {c8, b8, 1.0}}};
  CHECK_NOTHROW(allocate_measured(layers, table, Budget::bytes(2 * b4)));
  CHECK_THROWS_AS(allocate_measured({}, CostTable{}, Budget::bytes(100)), Error);
  CHECK_THROWS_AS(allocate_measured(layers, CostTable{table[0]}, Budget::bytes(1000)), Error);
  CHECK_THROWS_AS(allocate_measured(layers, table, Budget::bytes(2 * b4 - 1)), Error);
  CHECK_THROWS_AS(allocate_measured(layers, table, Budget::bits_per_weight(1.0)), Error);
  auto bad = table;
  bad[1][0].distortion = -1.0;
  CHECK_THROWS_AS(allocate_measured(layers, bad, Budget::bytes(1000)), Error);
  bad = table;
  bad[1][0].distortion = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(allocate_measured(layers, bad, Budget::bytes(1000)), Error);
  bad = table;
  bad[0][1].bytes = b8 - 1;  // not what core's quantized_bytes says
  CHECK_THROWS_AS(allocate_measured(layers, bad, Budget::bytes(1000)), Error);
  bad = table;
  bad[0].clear();
  CHECK_THROWS_AS(allocate_measured(layers, bad, Budget::bytes(1000)), Error);
  auto pinned = layers;
  pinned[0].min_bits = 16;  // no float candidate in the table
  CHECK_THROWS_AS(allocate_measured(pinned, table, Budget::bytes(1000)), Error);
  auto neg = layers;
  neg[1].alpha = -2.0;
  CHECK_THROWS_AS(allocate_measured(neg, table, Budget::bytes(1000)), Error);
  CHECK_THROWS_AS(solve_knapsack({}, 10), Error);
  CHECK_THROWS_AS(solve_knapsack({{}}, 10), Error);
  CHECK_THROWS_AS(solve_knapsack({{{5, std::nan("")}}}, 10), Error);
  CHECK_THROWS_AS(solve_knapsack({{{5, 1.0}}, {{6, 1.0}}}, 10), Error);
}
