// test_mse_observer.cpp: the MSE observer's error model against brute-force quantization, its
// choice never worse than MinMax on heavy-tailed data (actual MSE), and the known optimal
// clipping of a Gaussian at 4 bits.
#include <catch2/catch.hpp>
#include <cmath>
#include <lowbit/calib/minmax_observer.hpp>
#include <lowbit/calib/mse_observer.hpp>
#include <lowbit/core/metrics.hpp>
#include <lowbit/core/quantize.hpp>
#include <random>

using lowbit::Error;
using lowbit::MatrixXfR;
using lowbit::Scheme;
using lowbit::calib::Axis;
using lowbit::calib::MinMaxObserver;
using lowbit::calib::MseObserver;

namespace {

// Student-t with 3 degrees of freedom plus a few large outliers: heavy tails as in LLM tensors.
MatrixXfR heavy_tailed(int rows, int cols, std::mt19937& rng, float shift = 0.0f) {
  std::student_t_distribution<float> t(3.0f);
  MatrixXfR m(rows, cols);
  for (int i = 0; i < m.size(); ++i) m.data()[i] = t(rng) + shift;
  m(0, 0) = 40.0f;
  m(rows - 1, cols - 1) = -25.0f;
  return m;
}

MatrixXfR gaussian(int rows, int cols, std::mt19937& rng) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  MatrixXfR m(rows, cols);
  for (int i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
  return m;
}

double actual_mse(const MatrixXfR& x, const lowbit::QuantParams& p) {
  return lowbit::mse(x, lowbit::dequantize(lowbit::quantize(x, p), p));
}

}  // namespace

TEST_CASE("expected_error agrees with the actual quantization MSE") {
  std::mt19937 rng(5);
  const MatrixXfR x = heavy_tailed(200, 100, rng, 0.5f);
  for (const Scheme s : {Scheme::per_tensor(4, true), Scheme::per_tensor(4, false),
                         Scheme::per_tensor(8, false), Scheme::per_tensor(3, true)}) {
    MseObserver o(s);
    o.observe(x);
    for (auto [lo, hi] : {std::pair{-25.0f, 40.0f}, std::pair{-3.0f, 4.0f}, std::pair{-1.0f, 6.0f},
                          std::pair{0.0f, 2.0f}}) {
      const double model = o.expected_error(0, lo, hi);
      const double real = actual_mse(x, lowbit::choose_params(MatrixXfR(MatrixXfR{{lo, hi}}), s));
      INFO("bits " << s.bits << " sym " << s.symmetric << " [" << lo << ", " << hi << "]");
      REQUIRE(model == Approx(real).epsilon(0.03));
    }
  }
}

TEST_CASE("MseObserver is never worse than MinMax on heavy-tailed data (actual MSE)") {
  std::mt19937 rng(6);
  for (const Scheme s : {Scheme::per_tensor(8, true), Scheme::per_tensor(8, false),
                         Scheme::per_tensor(4, true), Scheme::per_tensor(4, false),
                         Scheme::per_channel(4, true), Scheme::per_channel(3, false)}) {
    MseObserver mse(s);
    MinMaxObserver minmax(s);
    MatrixXfR all(0, 256);
    for (int b = 0; b < 3; ++b) {
      const MatrixXfR x = heavy_tailed(32, 256, rng, 0.3f * static_cast<float>(b));
      mse.observe(x);
      minmax.observe(x);
      MatrixXfR grown(all.rows() + x.rows(), 256);
      grown << all, x;
      all = grown;
    }
    // Per channel the observers saw 32-row batches; score every batch with the final params.
    double e_mse = 0.0, e_minmax = 0.0;
    for (int b = 0; b < 3; ++b) {
      const MatrixXfR x = all.middleRows(32 * b, 32);
      e_mse += actual_mse(x, mse.params());
      e_minmax += actual_mse(x, minmax.params());
    }
    INFO("bits " << s.bits << " sym " << s.symmetric << " per_channel "
                 << (s.granularity == lowbit::Granularity::per_channel));
    WARN("MSE / MinMax actual error ratio " << e_mse / e_minmax);
    REQUIRE(e_mse <= e_minmax);
    // Clipping the tails pays at low bits, most where a block holds the outliers.
    if (s.bits <= 4)
      REQUIRE(e_mse <= (s.granularity == lowbit::Granularity::per_tensor ? 0.5 : 0.8) * e_minmax);
  }
}

TEST_CASE("MseObserver clips a Gaussian at 4 bits near the known optimum 2.55 sigma") {
  // Optimal symmetric 16-level clipping of N(0, 1) (Banner et al., ACIQ): about 2.55 sigma.
  std::mt19937 rng(8);
  MseObserver o(Scheme::per_tensor(4, true));
  for (int b = 0; b < 4; ++b) o.observe(gaussian(100, 100, rng));
  const auto r = o.ranges();
  const float amax = std::max(-r.min[0], r.max[0]);
  WARN("4-bit Gaussian clipping threshold " << amax << " sigma");
  REQUIRE(amax > 2.3f);
  REQUIRE(amax < 2.9f);
  // At 8 bits the optimum clips much less (about 4 sigma, bounded by the sample maximum).
  MseObserver o8(Scheme::per_tensor(8, true));
  o8.observe(gaussian(200, 100, rng));
  REQUIRE(o8.ranges().max[0] > 3.3f);
}

TEST_CASE("MseObserver on uniform data keeps (nearly) the full range") {
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(-1.0f, 3.0f);
  MatrixXfR x(100, 100);
  for (int i = 0; i < x.size(); ++i) x.data()[i] = u(rng);
  MseObserver o(Scheme::per_tensor(4, false), Axis::columns);
  o.observe(x);
  const auto r = o.ranges();
  REQUIRE(r.min[0] < -0.85f);
  REQUIRE(r.max[0] > 2.7f);
  MinMaxObserver m(Scheme::per_tensor(4, false));
  m.observe(x);
  REQUIRE(actual_mse(x, o.params()) <= 1.02 * actual_mse(x, m.params()));
}

TEST_CASE("MseObserver rejects bad input") {
  MseObserver o(Scheme::per_tensor(8));
  REQUIRE_THROWS_AS(o.params(), Error);
  REQUIRE_THROWS_AS(o.expected_error(0, -1.0f, 1.0f), Error);
  o.observe(MatrixXfR::Constant(2, 2, 1.0f));
  REQUIRE_THROWS_AS(o.expected_error(1, -1.0f, 1.0f), Error);
  REQUIRE_THROWS_AS(o.expected_error(-1, -1.0f, 1.0f), Error);
  REQUIRE_THROWS_AS(o.expected_error(0, 1.0f, -1.0f), Error);
  REQUIRE_THROWS_AS(o.expected_error(0, std::nanf(""), 1.0f), Error);
  REQUIRE_THROWS_AS(MseObserver(Scheme::per_tensor(8), Axis::rows, 8), Error);
}
