// test_percentile_observer.cpp: percentiles of known distributions (closed forms) and of the
// data itself, symmetric and two-sided, per tensor and per channel, over growing ranges.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <lowbit/calib/percentile_observer.hpp>
#include <random>
#include <vector>

using lowbit::Error;
using lowbit::MatrixXfR;
using lowbit::Scheme;
using lowbit::calib::Axis;
using lowbit::calib::PercentileObserver;

namespace {

MatrixXfR uniform(int rows, int cols, float lo, float hi, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(lo, hi);
  MatrixXfR m(rows, cols);
  for (int i = 0; i < m.size(); ++i) m.data()[i] = u(rng);
  return m;
}

// Exact q-quantile (lower order statistic) of a vector.
double order_stat(std::vector<float> v, double q) {
  const auto k = static_cast<size_t>(q * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

}  // namespace

TEST_CASE("PercentileObserver on U(-1, 3) matches the closed-form percentiles") {
  std::mt19937 rng(1);
  PercentileObserver two(Scheme::per_tensor(8, false), 99.0);
  PercentileObserver sym(Scheme::per_tensor(8, true), 99.0);
  std::vector<float> all, mags;
  // Batches of different sizes; later ones extend the range (re-binning).
  for (int rows : {50, 400, 300, 250}) {
    const MatrixXfR b = uniform(rows, 100, -1.0f, 3.0f, rng);
    two.observe(b);
    sym.observe(b);
    for (int i = 0; i < b.size(); ++i) {
      all.push_back(b.data()[i]);
      mags.push_back(std::abs(b.data()[i]));
    }
  }
  // Two-sided: 0.5% cut from each tail: -1 + 4 * 0.005 = -0.98 and 3 - 0.02 = 2.98.
  const auto r2 = two.ranges();
  const double w2 = two.histogram(0).width();
  REQUIRE(w2 < 4.0 / 1024.0);  // at least half the 2048 bins cover the data
  REQUIRE(r2.min[0] == Approx(-0.98).margin(w2 + 0.006));
  REQUIRE(r2.max[0] == Approx(2.98).margin(w2 + 0.006));
  REQUIRE(std::abs(r2.min[0] - order_stat(all, 0.005)) <= w2 + 1e-5);
  REQUIRE(std::abs(r2.max[0] - order_stat(all, 0.995)) <= w2 + 1e-5);
  // Symmetric: P(|x| <= t) = 0.5 + (t - 1) / 4 for t in [1, 3]; 0.99 gives t = 2.96.
  const auto rs = sym.ranges();
  const double ws = sym.histogram(0).width();
  REQUIRE(rs.max[0] == Approx(2.96).margin(ws + 0.006));
  REQUIRE(rs.min[0] == Approx(-1.0f));  // -t clipped to the observed minimum
  REQUIRE(std::abs(rs.max[0] - order_stat(mags, 0.99)) <= ws + 1e-5);
  REQUIRE(sym.params().scale[0] == Approx(rs.max[0] / 127.5).epsilon(1e-6));
  // The asymmetric params come from core's rule on the two-sided range.
  const auto p = two.params();
  REQUIRE(p.scale[0] == Approx((r2.max[0] - r2.min[0]) / 255.0).epsilon(1e-6));
  REQUIRE(p.zero_point[0] == static_cast<int>(std::nearbyint(-r2.min[0] / p.scale[0])));
}

TEST_CASE("PercentileObserver two-sided on Exp(1): quantiles -ln(1 - q)") {
  std::mt19937 rng(4);
  std::exponential_distribution<float> e(1.0f);
  PercentileObserver o(Scheme::per_tensor(8, false), 99.0);
  for (int b = 0; b < 5; ++b) {
    MatrixXfR x(200, 200);
    for (int i = 0; i < x.size(); ++i) x.data()[i] = e(rng);
    o.observe(x);
  }
  // 0.5% cut from each tail: -ln(0.995) = 0.00501 and -ln(0.005) = 5.298.
  const auto r = o.ranges();
  const double w = o.histogram(0).width();
  REQUIRE(r.min[0] == Approx(-std::log(0.995)).margin(w + 0.001));
  REQUIRE(r.max[0] == Approx(-std::log(0.005)).margin(w + 0.1));  // sparse tail: sampling error
  REQUIRE(r.max[0] < o.max_vals()[0]);
}

TEST_CASE("PercentileObserver per channel: each row gets its own percentile") {
  std::mt19937 rng(2);
  PercentileObserver rows(Scheme::per_channel(4, true), 90.0);
  MatrixXfR w(4, 5000);
  for (int r = 0; r < 4; ++r)
    w.row(r) = uniform(1, 5000, -1.0f, 1.0f, rng) * static_cast<float>(r + 1);
  rows.observe(w);
  // |x| of row r is uniform on [0, r + 1]: the 90th percentile is 0.9 (r + 1).
  const auto rr = rows.ranges();
  for (int r = 0; r < 4; ++r)
    REQUIRE(rr.max[static_cast<size_t>(r)] == Approx(0.9 * (r + 1)).margin(0.03 * (r + 1)));
  // Columns of an activation batch: feature j uniform on [0, j + 1], two-sided 80%: [0.1, 0.9] (j +
  // 1).
  PercentileObserver cols(Scheme::per_channel(8, false), 80.0, Axis::columns, 512);
  for (int b = 0; b < 3; ++b) {
    MatrixXfR x(2000, 3);
    for (int j = 0; j < 3; ++j) x.col(j) = uniform(2000, 1, 0.0f, static_cast<float>(j + 1), rng);
    cols.observe(x);
  }
  const auto rc = cols.ranges();
  for (int j = 0; j < 3; ++j) {
    REQUIRE(rc.min[static_cast<size_t>(j)] == Approx(0.1 * (j + 1)).margin(0.02 * (j + 1)));
    REQUIRE(rc.max[static_cast<size_t>(j)] == Approx(0.9 * (j + 1)).margin(0.02 * (j + 1)));
  }
  REQUIRE(cols.params().scale.size() == 3);
}

TEST_CASE("PercentileObserver edge cases") {
  std::mt19937 rng(3);
  const MatrixXfR b = uniform(10, 10, -2.0f, 5.0f, rng);
  // 100 gives exactly the observed min/max.
  PercentileObserver full(Scheme::per_tensor(8, false), 100.0);
  full.observe(b);
  REQUIRE(full.ranges().min[0] == b.minCoeff());
  REQUIRE(full.ranges().max[0] == b.maxCoeff());
  // A constant batch and one-signed data stay valid ranges.
  PercentileObserver c(Scheme::per_tensor(8, true), 99.0);
  c.observe(MatrixXfR::Constant(3, 3, 1.5f));
  REQUIRE(c.ranges().max[0] == Approx(1.5f).epsilon(1e-5));
  REQUIRE_NOTHROW(c.params());
  PercentileObserver neg(Scheme::per_tensor(8, true), 50.0);
  neg.observe(-uniform(20, 20, 1.0f, 2.0f, rng));
  const auto rn = neg.ranges();
  REQUIRE(rn.min[0] <= rn.max[0]);
  REQUIRE(rn.min[0] == Approx(-1.5).margin(0.05));
  REQUIRE(neg.percentile() == 50.0);
}

TEST_CASE("PercentileObserver rejects bad options") {
  for (double p : {0.0, -1.0, 100.5, std::nan("")})
    REQUIRE_THROWS_AS(PercentileObserver(Scheme::per_tensor(8), p), Error);
  for (int bins : {0, 15, (1 << 20) + 1})
    REQUIRE_THROWS_AS(PercentileObserver(Scheme::per_tensor(8), 99.0, Axis::rows, bins), Error);
  REQUIRE_THROWS_AS(PercentileObserver(Scheme::per_group(8, 4), 99.0, Axis::columns), Error);
}
