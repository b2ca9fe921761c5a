// test_entropy_observer.cpp: KL (entropy) calibration: Gaussian plus outliers lands inside a known
// bracket, fewer bits clip harder, uniform data is not clipped, per-channel thresholds scale.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <lowbit/calib/entropy_observer.hpp>
#include <random>
#include <vector>

using lowbit::Error;
using lowbit::MatrixXfR;
using lowbit::Scheme;
using lowbit::calib::Axis;
using lowbit::calib::EntropyObserver;

namespace {

// N(0, 1) batches of 25,000 values; `outliers` of them replaced by +-40..75.
float observe_gaussian(EntropyObserver& o, int outliers, std::mt19937& rng) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (int b = 0; b < 4; ++b) {
    MatrixXfR x(100, 250);
    for (int i = 0; i < x.size(); ++i) x.data()[i] = n(rng);
    for (int k = 0; k < outliers / 4; ++k)
      x(k, 7 * k) = (k % 2 ? -1.0f : 1.0f) * (40.0f + 5.0f * static_cast<float>(k));
    o.observe(x);
  }
  const auto r = o.ranges();
  return std::max(-r.min[0], r.max[0]);
}

// TensorRT's procedure written out bin by bin: build P and Q as vectors, normalise, smooth
// (zeros -> eps, renormalise), sum P log(P / Q). The reference for the closed form.
double direct_kl(const std::vector<double>& counts, int i, int levels, double eps = 1e-4) {
  const auto n = static_cast<size_t>(i);
  std::vector<double> p(counts.begin(), counts.begin() + i), q(n, 0.0);
  for (size_t j = n; j < counts.size(); ++j) p[n - 1] += counts[j];
  for (int g = 0; g < levels; ++g) {
    const auto b0 = static_cast<size_t>(g * i / levels),
               b1 = static_cast<size_t>((g + 1) * i / levels);
    double mass = 0.0, nonzero = 0.0;
    for (size_t j = b0; j < b1; ++j)
      if (counts[j] > 0.0) mass += counts[j], nonzero += 1.0;
    for (size_t j = b0; j < b1; ++j)
      if (counts[j] > 0.0) q[j] = mass / nonzero;
  }
  for (auto* d : {&p, &q}) {
    double sum = 0.0, smoothed = 0.0;
    for (double v : *d) sum += v;
    if (sum == 0.0) return std::numeric_limits<double>::infinity();
    for (double& v : *d) smoothed += (v = v == 0.0 ? eps : v / sum);
    for (double& v : *d) v /= smoothed;
  }
  double kl = 0.0;
  for (size_t j = 0; j < n; ++j) kl += p[j] * std::log(p[j] / q[j]);
  return kl;
}

}  // namespace

TEST_CASE("kl_divergences agrees with TensorRT's procedure computed bin by bin") {
  std::mt19937 rng(9);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 6; ++trial) {
    const int bins = 40 + 37 * trial, levels = 8 + 2 * trial;
    std::vector<double> counts(static_cast<size_t>(bins));
    for (auto& c : counts)  // sparse, skewed counts with many empty bins
      c = u(rng) < 0.3 ? 0.0 : std::floor(1000.0 * std::exp(-5.0 * u(rng)));
    counts.back() = 3.0;
    const auto kl = lowbit::calib::detail::kl_divergences(counts, bins, levels);
    REQUIRE(kl.size() == static_cast<size_t>(bins - levels + 1));
    for (int i = levels; i <= bins; ++i) {
      const double ref = direct_kl(counts, i, levels);
      INFO("bins " << bins << " levels " << levels << " i " << i);
      if (std::isinf(ref))
        REQUIRE(std::isinf(kl[static_cast<size_t>(i - levels)]));
      else
        REQUIRE(kl[static_cast<size_t>(i - levels)] == Approx(ref).epsilon(1e-9).margin(1e-12));
    }
  }
}

TEST_CASE("EntropyObserver: Gaussian plus outliers gets a threshold inside the bracket") {
  std::mt19937 rng(1);
  EntropyObserver o8(Scheme::per_tensor(8, true));
  const float t8 = observe_gaussian(o8, 20, rng);
  WARN("INT8 KL threshold with outliers: " << t8 << " sigma (max " << o8.max_vals()[0] << ")");
  // Min-max would take 60 sigma. KL keeps the bulk (beyond 3 sigma lies only 0.27% of the mass)
  // and drops the 0.02% of outliers: the threshold lies in [3, 8] sigma.
  REQUIRE(o8.max_vals()[0] >= 40.0f);
  REQUIRE(t8 > 3.0f);
  REQUIRE(t8 < 8.0f);
  const auto p = o8.params();
  REQUIRE(p.scale[0] == Approx(t8 / 127.5).epsilon(1e-5));
  // Fewer levels: the divergence prefers a tighter threshold.
  EntropyObserver o4(Scheme::per_tensor(4, true));
  const float t4 = observe_gaussian(o4, 20, rng);
  WARN("INT4 KL threshold with outliers: " << t4 << " sigma");
  REQUIRE(t4 > 2.0f);
  REQUIRE(t4 < t8);
  // Without outliers the threshold stays in the same bracket, below the sample maximum.
  EntropyObserver clean(Scheme::per_tensor(8, true));
  const float tc = observe_gaussian(clean, 0, rng);
  REQUIRE(tc > 3.0f);
  REQUIRE(tc < clean.max_vals()[0]);
}

TEST_CASE("EntropyObserver keeps the full range of uniform data") {
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  MatrixXfR x(100, 200);
  for (int i = 0; i < x.size(); ++i) x.data()[i] = u(rng);
  EntropyObserver o(Scheme::per_tensor(8, true));
  o.observe(x);
  REQUIRE(o.ranges().max[0] > 0.98f);
  REQUIRE(o.ranges().min[0] < -0.98f);
  // A histogram with no more bins than there are levels is never clipped.
  EntropyObserver few(Scheme::per_tensor(8, true), Axis::rows, 16);
  MatrixXfR small(1, 4);
  small << -0.5f, 0.25f, 1.0f, 2.0f;
  few.observe(small);
  REQUIRE(few.ranges().max[0] == 2.0f);
  REQUIRE(few.ranges().min[0] == -0.5f);
}

TEST_CASE("EntropyObserver per channel and asymmetric one-signed data") {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0.0f, 1.0f);
  MatrixXfR x(3000, 3);
  for (int i = 0; i < x.size(); ++i) x.data()[i] = n(rng) * static_cast<float>(1 + i % 3);
  EntropyObserver o(Scheme::per_channel(8, true), Axis::columns, 1024);
  o.observe(x);
  const auto r = o.ranges();
  REQUIRE(r.max.size() == 3);
  // Feature j has sigma j + 1: thresholds scale with it (within sampling noise).
  REQUIRE(r.max[1] / r.max[0] == Approx(2.0).epsilon(0.25));
  REQUIRE(r.max[2] / r.max[0] == Approx(3.0).epsilon(0.25));
  // ReLU-like data under an asymmetric scheme: range [0, t] with t inside the data.
  EntropyObserver relu(Scheme::per_tensor(8, false));
  const MatrixXfR pos = x.cwiseAbs();
  relu.observe(pos);
  const auto rr = relu.ranges();
  REQUIRE(rr.min[0] == pos.minCoeff());
  REQUIRE(rr.max[0] > 2.0f);
  REQUIRE(rr.max[0] <= pos.maxCoeff());
  REQUIRE(relu.params().zero_point[0] == 0);
}

TEST_CASE("EntropyObserver rejects bad input") {
  REQUIRE_THROWS_AS(EntropyObserver(Scheme::per_tensor(8), Axis::rows, 10), Error);
  REQUIRE_THROWS_AS(EntropyObserver(Scheme::per_tensor(0)), Error);
  EntropyObserver o(Scheme::per_tensor(8));
  REQUIRE_THROWS_AS(o.params(), Error);
  MatrixXfR x = MatrixXfR::Ones(2, 2);
  x(0, 1) = std::numeric_limits<float>::infinity();
  REQUIRE_THROWS_AS(o.observe(x), Error);
  REQUIRE_FALSE(o.has_observations());
}

TEST_CASE("kl_threshold cuts a lone far outlier bin off a compact bulk") {
  using lowbit::calib::detail::Histogram;
  // 200 bins of a smooth bulk (half-Gaussian shape) and one count at the far end: keeping the
  // outlier would merge 16 bulk bins per level, so the minimum KL sits at the bulk's end.
  Histogram h(2048, true);
  h.cover(0.0, 2048.0);
  for (int b = 0; b < 200; ++b) {
    const int n = static_cast<int>(10000.0 * std::exp(-0.5 * (b / 70.0) * (b / 70.0)));
    for (int k = 0; k < n; ++k) h.add(b + 0.5);
  }
  h.add(2047.5);
  const double t = lowbit::calib::detail::kl_threshold(h, 128);
  REQUIRE(t >= 128.0);
  REQUIRE(t <= 260.0);
  // With the outlier's mass comparable to the bulk's, the whole range is kept.
  Histogram g(2048, true);
  g.cover(0.0, 2048.0);
  for (int b = 0; b < 2048; b += 2) g.add(b + 0.5);
  REQUIRE(lowbit::calib::detail::kl_threshold(g, 128) >= 2000.0);
}
