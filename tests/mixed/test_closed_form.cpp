// test_closed_form.cpp: the closed-form allocator against an independent Lagrange solution,
// its integer repair (budget, monotonicity, ties, pins) and its rejected inputs.
#include <lowbit/mixed/closed_form.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

using namespace lowbit;
using namespace lowbit::mixed;

namespace {

// Independent Lagrange solution: d/db (n c 2^(-2b)) + mu n = 0 gives
// b = log2(2 ln2 c / mu) / 2, clamped; bisection on log(mu) meets the budget.
std::vector<double> lagrange_by_bisection(const std::vector<double>& n, const std::vector<double>& c,
                                          const std::vector<double>& lo,
                                          const std::vector<double>& hi, double total) {
  const auto bits = [&](double log_mu) {
    std::vector<double> b(n.size());
    for (size_t i = 0; i < n.size(); ++i)
      b[i] = std::clamp(0.5 * std::log2(2.0 * std::log(2.0) * c[i]) - 0.5 * log_mu / std::log(2.0),
                        lo[i], hi[i]);
    return b;
  };
  const auto spent = [&](double log_mu) {
    const auto b = bits(log_mu);
    double s = 0.0;
    for (size_t i = 0; i < n.size(); ++i) s += n[i] * b[i];
    return s;
  };
  double a = -400.0, z = 400.0;  // spent() decreases in mu
  for (int it = 0; it < 300; ++it) {
    const double m = 0.5 * (a + z);
    (spent(m) > total ? a : z) = m;
  }
  return bits(0.5 * (a + z));
}

Layer make_layer(Index rows, Index cols, double alpha, double sigma2) {
  Layer l;
  l.name = "l";
  l.rows = rows;
  l.cols = cols;
  l.alpha = alpha;
  l.sigma2 = sigma2;
  return l;
}

}  // namespace

TEST_CASE("continuous_bits unclamped is the closed-form formula") {
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 20; ++trial) {
    const size_t L = 2 + trial % 7;
    std::vector<double> n(L), c(L), lo(L, -1e3), hi(L, 1e3);
    double N = 0.0;
    for (size_t i = 0; i < L; ++i) {
      n[i] = std::floor(1.0 + 1000.0 * u(rng));
      c[i] = std::exp2(20.0 * u(rng) - 10.0);
      N += n[i];
    }
    const double mean_bits = 2.0 + 4.0 * u(rng);
    double mean_log = 0.0;
    for (size_t i = 0; i < L; ++i) mean_log += n[i] / N * std::log2(c[i]);
    const auto b = continuous_bits(n, c, lo, hi, mean_bits * N);
    for (size_t i = 0; i < L; ++i)
      CHECK(b[i] == Approx(mean_bits + 0.5 * (std::log2(c[i]) - mean_log)).margin(1e-9));
  }
}

TEST_CASE("continuous_bits with clamps equals the Lagrange solution and meets KKT") {
  std::mt19937 rng(2);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 50; ++trial) {
    const size_t L = 1 + trial % 8;
    std::vector<double> n(L), c(L), lo(L), hi(L);
    double min_total = 0.0, max_total = 0.0;
    for (size_t i = 0; i < L; ++i) {
      n[i] = std::floor(1.0 + 500.0 * u(rng));
      c[i] = std::exp2(24.0 * u(rng) - 12.0);
      lo[i] = u(rng) < 0.5 ? 2.0 : 3.0;
      hi[i] = u(rng) < 0.5 ? 8.0 : 4.0;
      min_total += n[i] * lo[i];
      max_total += n[i] * hi[i];
    }
    const double total = min_total + (max_total - min_total) * u(rng);
    const auto b = continuous_bits(n, c, lo, hi, total);
    const auto ref = lagrange_by_bisection(n, c, lo, hi, total);
    double spent = 0.0;
    for (size_t i = 0; i < L; ++i) {
      CHECK(b[i] == Approx(ref[i]).margin(1e-6));
      spent += n[i] * b[i];
    }
    CHECK(spent == Approx(total).epsilon(1e-12));
    // KKT: free layers share one marginal c*2^(-2b); clamped ones sit on the right side of it.
    double mu = -1.0;
    for (size_t i = 0; i < L; ++i)
      if (b[i] > lo[i] + 1e-9 && b[i] < hi[i] - 1e-9) mu = c[i] * std::exp2(-2.0 * b[i]);
    if (mu > 0.0)
      for (size_t i = 0; i < L; ++i) {
        const double m = c[i] * std::exp2(-2.0 * b[i]);
        if (b[i] <= lo[i] + 1e-9) CHECK(m <= mu * (1 + 1e-6));
        else if (b[i] >= hi[i] - 1e-9) CHECK(m >= mu * (1 - 1e-6));
        else CHECK(m == Approx(mu).epsilon(1e-6));
      }
  }
}

TEST_CASE("continuous_bits edge cases") {
  // Budget above every layer's maximum: all at hi.
  CHECK(continuous_bits({10, 10}, {1, 2}, {2, 2}, {8, 8}, 1000) == std::vector<double>{8, 8});
  // A layer with c = 0 stays at lo; the other takes the rest.
  const auto b = continuous_bits({10, 10}, {0, 2}, {2, 2}, {8, 8}, 100);
  CHECK(b[0] == 2.0);
  CHECK(b[1] == Approx(8.0));
  const auto z = continuous_bits({10, 10}, {0, 0}, {2, 3}, {8, 8}, 60);
  CHECK(z == std::vector<double>{2, 3});
  CHECK_THROWS_AS(continuous_bits({}, {}, {}, {}, 1), Error);
  CHECK_THROWS_AS(continuous_bits({10}, {1, 2}, {2}, {8}, 50), Error);
  CHECK_THROWS_AS(continuous_bits({10}, {-1}, {2}, {8}, 50), Error);
  CHECK_THROWS_AS(continuous_bits({0}, {1}, {2}, {8}, 50), Error);
  CHECK_THROWS_AS(continuous_bits({10}, {1}, {4}, {2}, 50), Error);
  CHECK_THROWS_AS(continuous_bits({10}, {1}, {2}, {8}, 19), Error);
  CHECK_THROWS_AS(continuous_bits({10}, {std::nan("")}, {2}, {8}, 50), Error);
}

TEST_CASE("closed form: budget respected, no upgrade left that fits, monotone in alpha*sigma2") {
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 40; ++trial) {
    const size_t L = 2 + trial % 9;
    std::vector<Layer> layers;
    const bool same_shape = trial % 2 == 0;
    for (size_t i = 0; i < L; ++i)
      layers.push_back(make_layer(same_shape ? 48 : 8 + Index(u(rng) * 100),
                                  same_shape ? 96 : 8 + Index(u(rng) * 300),
                                  std::exp2(16.0 * u(rng) - 8.0), 0.01 + u(rng)));
    ClosedFormOptions opt;
    opt.group_size = trial % 3 == 0 ? 0 : 32;
    opt.symmetric = trial % 4 != 1;
    const Index total_weights = [&] {
      Index t = 0;
      for (const auto& l : layers) t += l.weights();
      return t;
    }();
    // A budget between every layer at 2 bits and every layer at 8 bits.
    size_t lo_bytes = 0, hi_bytes = 0;
    for (const auto& l : layers) {
      lo_bytes += candidate_bytes({2, opt.group_size, opt.symmetric, Method::rtn}, l.rows, l.cols);
      hi_bytes += candidate_bytes({8, opt.group_size, opt.symmetric, Method::rtn}, l.rows, l.cols);
    }
    const size_t B = lo_bytes + size_t(u(rng) * double(hi_bytes - lo_bytes));
    const Allocation a = allocate_closed_form(layers, Budget::bytes(B), opt);
    CHECK(total_weights > 0);
    REQUIRE(a.layers.size() == L);
    CHECK(a.budget_bytes == B);
    CHECK(a.total_bytes <= B);
    size_t sum = 0;
    for (size_t i = 0; i < L; ++i) {
      const auto& ch = a.layers[i];
      CHECK(ch.bytes == candidate_bytes(ch.candidate, layers[i].rows, layers[i].cols));
      sum += ch.bytes;
      CHECK(ch.predicted == Approx(double(layers[i].weights()) * layers[i].alpha * layers[i].sigma2 *
                                   std::exp2(-2.0 * ch.candidate.bits)));
      // Greedy repair stops only when no single upgrade fits.
      const auto& w = opt.widths;
      const auto it = std::find(w.begin(), w.end(), ch.candidate.bits);
      REQUIRE(it != w.end());
      if (it + 1 != w.end()) {
        Candidate up = ch.candidate;
        up.bits = *(it + 1);
        CHECK(a.total_bytes - ch.bytes + candidate_bytes(up, ch.rows, ch.cols) > B);
      }
    }
    CHECK(sum == a.total_bytes);
    if (same_shape)
      for (size_t i = 0; i < L; ++i)
        for (size_t j = 0; j < L; ++j)
          if (layers[i].alpha * layers[i].sigma2 > layers[j].alpha * layers[j].sigma2)
            CHECK(a.layers[i].candidate.bits >= a.layers[j].candidate.bits);
  }
}

TEST_CASE("closed form: identical layers get identical widths") {
  for (double bpw : {3.1, 3.3, 3.5, 3.9, 4.4, 5.0, 6.1, 7.7, 9.0}) {
    std::vector<Layer> layers;
    for (int rep = 0; rep < 3; ++rep) {
      layers.push_back(make_layer(64, 64, 2.0, 0.5));
      layers.push_back(make_layer(64, 64, 0.3, 0.5));
      layers.push_back(make_layer(32, 128, 1.0, 0.1));
    }
    const Allocation a = allocate_closed_form(layers, Budget::bits_per_weight(bpw));
    CHECK(a.total_bytes <= a.budget_bytes);
    for (size_t i = 3; i < layers.size(); ++i)
      CHECK(a.layers[i].candidate.bits == a.layers[i % 3].candidate.bits);
    for (size_t i = 0; i < layers.size(); ++i)
      CHECK(a.layers[i].continuous_bits == Approx(a.layers[i % 3].continuous_bits));
  }
}

TEST_CASE("closed form: rounding from the continuous solution and pins") {
  // Widths {2,3,4,8}: a plentiful budget gives everyone 8, a tight one 2.
  std::vector<Layer> layers{make_layer(64, 128, 1.0, 1.0), make_layer(64, 128, 100.0, 1.0),
                            make_layer(64, 128, 0.01, 1.0)};
  const Allocation rich = allocate_closed_form(layers, Budget::bits_per_weight(12.0));
  for (const auto& l : rich.layers) CHECK(l.candidate.bits == 8);
  const size_t min_bytes = 3 * candidate_bytes({2, 128, true, Method::rtn}, 64, 128);
  const Allocation poor = allocate_closed_form(layers, Budget::bytes(min_bytes));
  for (const auto& l : poor.layers) CHECK(l.candidate.bits == 2);
  CHECK(poor.total_bytes == min_bytes);

  // The most sensitive layer gets ~log2(100)/2 = 3.3 bits more than the middle one.
  const Allocation mid = allocate_closed_form(layers, Budget::bits_per_weight(4.5));
  CHECK(mid.layers[1].continuous_bits - mid.layers[0].continuous_bits == Approx(0.5 * std::log2(100.0)));
  CHECK(mid.layers[1].candidate.bits >= mid.layers[0].candidate.bits);
  CHECK(mid.layers[0].candidate.bits >= mid.layers[2].candidate.bits);

  // Pins: keep the least sensitive layer at >= 8 bits, and one in float when 32 is supported.
  layers[2].min_bits = 8;
  const Allocation pinned = allocate_closed_form(layers, Budget::bits_per_weight(4.5));
  CHECK(pinned.layers[2].candidate.bits == 8);
  CHECK(pinned.total_bytes <= pinned.budget_bytes);
  ClosedFormOptions with_float;
  with_float.widths = {2, 3, 4, 8, 32};
  layers[2].min_bits = 32;
  const Allocation fl = allocate_closed_form(layers, Budget::bits_per_weight(16.0), with_float);
  CHECK(fl.layers[2].candidate.keeps_float());
  CHECK(fl.layers[2].bytes == 4u * 64 * 128);
  CHECK(fl.layers[2].predicted == 0.0);
  layers[1].max_bits = 3;
  const Allocation capped = allocate_closed_form(layers, Budget::bits_per_weight(16.0), with_float);
  CHECK(capped.layers[1].candidate.bits == 3);
}

TEST_CASE("closed form rejects bad input") {
  std::vector<Layer> ok{make_layer(16, 16, 1.0, 1.0), make_layer(16, 32, 2.0, 1.0)};
  CHECK_NOTHROW(allocate_closed_form(ok, Budget::bits_per_weight(4.0)));
  CHECK_THROWS_AS(allocate_closed_form({}, Budget::bits_per_weight(4.0)), Error);
  // Budget below the smallest width (2 bits plus the scales).
  CHECK_THROWS_AS(allocate_closed_form(ok, Budget::bits_per_weight(2.0)), Error);
  CHECK_THROWS_AS(allocate_closed_form(ok, Budget::bytes(10)), Error);
  auto bad = ok;
  bad[0].alpha = -1.0;
  CHECK_THROWS_AS(allocate_closed_form(bad, Budget::bits_per_weight(4.0)), Error);
  bad = ok;
  bad[1].sigma2 = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(allocate_closed_form(bad, Budget::bits_per_weight(4.0)), Error);
  bad = ok;
  bad[0].rows = 0;
  CHECK_THROWS_AS(allocate_closed_form(bad, Budget::bits_per_weight(4.0)), Error);
  bad = ok;
  bad[0].min_bits = 5;
  bad[0].max_bits = 7;  // no supported width within the pins
  CHECK_THROWS_AS(allocate_closed_form(bad, Budget::bits_per_weight(4.0)), Error);
  bad[0].min_bits = 8;
  bad[0].max_bits = 4;
  CHECK_THROWS_AS(allocate_closed_form(bad, Budget::bits_per_weight(4.0)), Error);
  bad = ok;
  bad[0].weight = MatrixXfR::Zero(3, 3);  // shape differs from rows x cols
  CHECK_THROWS_AS(allocate_closed_form(bad, Budget::bits_per_weight(4.0)), Error);
  ClosedFormOptions opt;
  opt.widths = {};
  CHECK_THROWS_AS(allocate_closed_form(ok, Budget::bits_per_weight(4.0), opt), Error);
  opt.widths = {4, 9};
  CHECK_THROWS_AS(allocate_closed_form(ok, Budget::bits_per_weight(4.0), opt), Error);
  opt.widths = {4};
  opt.group_size = -1;
  CHECK_THROWS_AS(allocate_closed_form(ok, Budget::bits_per_weight(4.0), opt), Error);
  CHECK_THROWS_AS(Budget::bits_per_weight(0.0), Error);
  CHECK_THROWS_AS(Budget::bits_per_weight(std::nan("")), Error);
  CHECK_THROWS_AS(Budget::bytes(0), Error);
}
