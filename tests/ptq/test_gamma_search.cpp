// test_gamma_search.cpp: RTN and the γ-search against brute force and the core quantizer.
#include <lowbit/ptq/calibration.hpp>
#include <lowbit/ptq/gamma_search.hpp>
#include <lowbit/ptq/rtn.hpp>

#include <catch2/catch.hpp>

#include "synthetic.hpp"

#include <limits>

using namespace lowbit;

namespace {

// Squared error of every parameter block of W against W_hat.
std::vector<double> block_sse(const MatrixXfR& W, const MatrixXfR& W_hat, const Scheme& s,
                              const Eigen::VectorXd& col_weight) {
  std::vector<double> e(size_t(param_count(s, W.rows(), W.cols())), 0.0);
  for (Index r = 0; r < W.rows(); ++r)
    for (Index c = 0; c < W.cols(); ++c) {
      const double d = double(W(r, c)) - double(W_hat(r, c));
      e[size_t(param_index(s, W.cols(), r, c))] += col_weight[c] * d * d;
    }
  return e;
}

std::vector<float> grid(const ptq::GammaSearchOptions& o) {
  std::vector<float> g;
  for (int k = 0; k < o.steps; ++k)
    g.push_back(1.0f - (1.0f - o.gamma_min) * float(k) / float(o.steps - 1));
  return g;
}

// Brute force: for every block, the grid γ with the smallest (weighted) squared error, each
// candidate quantized by core's quantize_weights with one γ for the whole matrix.
void check_blockwise_optimal(const MatrixXfR& W, const Scheme& s, const ptq::Result& res,
                             const ptq::GammaSearchOptions& o, const Eigen::VectorXd& col_weight) {
  const auto g = grid(o);
  const auto nb = size_t(param_count(s, W.rows(), W.cols()));
  std::vector<double> best(nb, std::numeric_limits<double>::infinity());
  for (float gamma : g) {
    const MatrixXfR W_hat = dequantize(quantize(W, choose_params(W, s, gamma)), choose_params(W, s, gamma));
    const auto e = block_sse(W, W_hat, s, col_weight);
    for (size_t b = 0; b < nb; ++b) best[b] = std::min(best[b], e[b]);
  }
  const auto got = block_sse(W, res.dequantize(), s, col_weight);
  REQUIRE(res.gammas.size() == nb);
  for (size_t b = 0; b < nb; ++b) REQUIRE(got[b] <= best[b] * (1.0 + 1e-9) + 1e-30);
}

}  // namespace

TEST_CASE("rtn is core's min-max quantization, at runtime bit widths") {
  const MatrixXfR W = test::heavy_tailed_weight(24, 70, 1);
  for (int bits : {2, 3, 4, 8}) {
    const Scheme s = Scheme::per_group(bits, 32, bits % 2 == 0);
    const auto res = ptq::rtn(W, s);
    const QuantParams p = choose_params(W, s);
    REQUIRE(res.codes == quantize(W, p));
    REQUIRE(res.params.scale == p.scale);
    REQUIRE(res.bits() == bits);
    REQUIRE(res.report.weight_mse == Approx(mse(W, dequantize(quantize(W, p), p))));
    REQUIRE(std::isnan(res.report.output_mse));
  }
  const auto r4 = ptq::rtn(W, Scheme::per_group(4, 32));
  const Int4Matrix m = r4.to_matrix<4>();
  REQUIRE(m.codes() == r4.codes);
  REQUIRE(m.dequantize() == r4.dequantize());
  REQUIRE_THROWS_AS(r4.to_matrix<8>(), Error);
}

TEST_CASE("rtn with calibration reports the output error measured on the tokens") {
  const MatrixXfR W = test::heavy_tailed_weight(32, 172, 2);  // 172: partial last group of 32
  const test::ActivationModel model(172, 8, 2, 3);
  const MatrixXfR X = model.sample(300, 4);
  const auto res = ptq::rtn(W, Scheme::per_group(4, 32), X);
  const double direct = ptq::output_error(W, res.dequantize(), X);
  REQUIRE(res.report.output_mse == Approx(direct).epsilon(1e-4));
  REQUIRE(res.report.tokens == 300);
  // Batches accumulate to the same statistics.
  ptq::Calibration c(172);
  c.add(X.topRows(100));
  c.add(X.bottomRows(200));
  const ptq::Calibration whole = ptq::detail::calibrate(X, 172);
  REQUIRE(c.tokens() == 300);
  REQUIRE(c.gram().isApprox(whole.gram(), 1e-6));
  REQUIRE(c.gram().isApprox((X.cast<double>().transpose() * X.cast<double>()), 1e-5));
  REQUIRE(c.max_abs().isApprox(X.cwiseAbs().colwise().maxCoeff().transpose().cast<double>()));
  REQUIRE(c.mean_abs().isApprox(X.cwiseAbs().colwise().mean().transpose().cast<double>(), 1e-6));
  REQUIRE(ptq::rtn(W, Scheme::per_group(4, 32), c).report.output_mse ==
          Approx(res.report.output_mse).epsilon(1e-6));
}

TEST_CASE("search_gamma minimising weight MSE picks the best grid γ of every block") {
  const MatrixXfR W = test::heavy_tailed_weight(16, 100, 5);
  const ptq::GammaSearchOptions o{0.4f, 13, ptq::ErrorMetric::output};
  const Eigen::VectorXd ones = Eigen::VectorXd::Ones(100);
  for (const Scheme& s : {Scheme::per_tensor(4), Scheme::per_channel(3, false),
                          Scheme::per_group(4, 32), Scheme::per_group(2, 16, false)}) {
    const auto res = ptq::search_gamma(W, s, o);
    check_blockwise_optimal(W, s, res, o, ones);
    REQUIRE(res.report.weight_mse <= ptq::rtn(W, s).report.weight_mse);
    // The parameters are core's min-max rule at the chosen γ.
    REQUIRE(res.codes == quantize(W, choose_params(W, s, res.gammas)));
  }
}

TEST_CASE("search_gamma with the importance metric weights channels by diag(XᵀX)") {
  const MatrixXfR W = test::heavy_tailed_weight(16, 96, 6);
  const test::ActivationModel model(96, 4, 3, 7);
  const ptq::Calibration c = ptq::detail::calibrate(model.sample(200, 8), 96);
  const ptq::GammaSearchOptions o{0.5f, 11, ptq::ErrorMetric::importance};
  for (const Scheme& s : {Scheme::per_channel(4), Scheme::per_group(3, 32, false)}) {
    const auto res = ptq::search_gamma(W, s, c, o);
    check_blockwise_optimal(W, s, res, o, c.importance());
    REQUIRE(ptq::importance_error(W, res.dequantize(), c) <=
            ptq::importance_error(W, ptq::rtn(W, s).dequantize(), c));
  }
}

TEST_CASE("search_gamma on output error: exact per channel, never worse than RTN per group") {
  const MatrixXfR W = test::heavy_tailed_weight(32, 160, 9);
  const test::ActivationModel model(160, 8, 3, 10);
  const MatrixXfR X = model.sample(400, 11);
  const ptq::GammaSearchOptions o{0.5f, 9, ptq::ErrorMetric::output};
  SECTION("per channel: each row's γ is the grid's best for that row's output error") {
    const Scheme s = Scheme::per_channel(3);
    const auto res = ptq::search_gamma(W, s, X, o);
    const auto g = grid(o);
    for (Index r = 0; r < W.rows(); r += 5) {
      double best = std::numeric_limits<double>::infinity();
      for (float gamma : g) {
        const MatrixXfR w = W.row(r);
        const auto p = choose_params(w, s, gamma);
        best = std::min(best, ptq::output_error(w, dequantize(quantize(w, p), p), X));
      }
      const MatrixXfR w = W.row(r), w_hat = res.dequantize().row(r);
      REQUIRE(ptq::output_error(w, w_hat, X) <= best * (1 + 1e-4));
    }
  }
  SECTION("per group (partial last group), INT4 and INT3") {
    for (int bits : {4, 3}) {
      const Scheme s = Scheme::per_group(bits, 64);
      const auto res = ptq::search_gamma(W, s, X, o);
      const double rtn = ptq::output_error(W, ptq::rtn(W, s).dequantize(), X);
      const double got = ptq::output_error(W, res.dequantize(), X);
      INFO("INT" << bits << " g64 gamma/rtn output error " << got / rtn);
      REQUIRE(got < rtn);
      REQUIRE(res.report.output_mse == Approx(got).epsilon(1e-3));
    }
  }
  SECTION("per tensor: one γ for the whole matrix") {
    const auto res = ptq::search_gamma(W, Scheme::per_tensor(4), X, o);
    REQUIRE(res.gammas.size() == 1);
    REQUIRE(res.report.output_mse <= ptq::rtn(W, Scheme::per_tensor(4), X).report.output_mse);
  }
}

TEST_CASE("rtn and search_gamma reject bad input") {
  const MatrixXfR W = test::heavy_tailed_weight(8, 16, 12);
  const MatrixXfR X = MatrixXfR::Ones(10, 16);
  const Scheme s = Scheme::per_group(4, 8);
  MatrixXfR bad = W;
  bad(2, 3) = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_AS(ptq::rtn(bad, s), Error);
  REQUIRE_THROWS_AS(ptq::rtn(bad, s, X), Error);
  REQUIRE_THROWS_AS(ptq::search_gamma(bad, s), Error);
  REQUIRE_THROWS_AS(ptq::search_gamma(W, s, MatrixXfR(10, 15)), Error);  // shape mismatch
  REQUIRE_THROWS_AS(ptq::search_gamma(W, s, MatrixXfR(0, 16)), Error);   // no tokens
  REQUIRE_THROWS_AS(ptq::search_gamma(W, s, ptq::Calibration(16)), Error);  // empty calibration
  REQUIRE_THROWS_AS(ptq::rtn(W, s, ptq::Calibration(16)), Error);
  MatrixXfR badX = X;
  badX(0, 0) = std::numeric_limits<float>::infinity();
  REQUIRE_THROWS_AS(ptq::search_gamma(W, s, badX), Error);
  REQUIRE_THROWS_AS(ptq::search_gamma(W, Scheme::per_group(9, 8)), Error);
  REQUIRE_THROWS_AS(ptq::search_gamma(W, Scheme::per_group(4, 0)), Error);
  REQUIRE_THROWS_AS(ptq::search_gamma(W, s, ptq::GammaSearchOptions{0.0f, 10}), Error);
  REQUIRE_THROWS_AS(ptq::search_gamma(W, s, ptq::GammaSearchOptions{1.5f, 10}), Error);
  REQUIRE_THROWS_AS(ptq::search_gamma(W, s, ptq::GammaSearchOptions{0.5f, 0}), Error);
  REQUIRE_THROWS_AS(ptq::search_gamma(W, s, X, ptq::GammaSearchOptions{0.5f, 5, ptq::ErrorMetric(7)}), Error);
  REQUIRE_THROWS_AS(ptq::search_gamma(W, s, MatrixXfR()), Error);
  REQUIRE_THROWS_AS(ptq::Calibration(0), Error);
  ptq::Calibration c(16);
  REQUIRE_THROWS_AS(c.add(MatrixXfR::Ones(3, 15)), Error);
  REQUIRE_THROWS_AS(c.add(badX), Error);
  REQUIRE(c.empty());
  REQUIRE_THROWS_AS(c.scaled(Eigen::VectorXf::Ones(15)), Error);
  REQUIRE_THROWS_AS(ptq::Calibration::from_gram(Eigen::MatrixXd::Ones(3, 4), 5), Error);
  REQUIRE_THROWS_AS(ptq::Calibration::from_gram(Eigen::MatrixXd::Identity(3, 3), 0), Error);
  Eigen::MatrixXd asym = Eigen::MatrixXd::Identity(3, 3);
  asym(0, 1) = 0.5;
  REQUIRE_THROWS_AS(ptq::Calibration::from_gram(asym, 5), Error);
  REQUIRE_THROWS_AS(ptq::Calibration::from_gram(-Eigen::MatrixXd::Identity(3, 3), 5), Error);
  REQUIRE_THROWS_AS(ptq::output_error(W, W, MatrixXfR::Ones(4, 15)), Error);
  REQUIRE_THROWS_AS(ptq::output_error(W, MatrixXfR::Ones(8, 15), X), Error);
}
