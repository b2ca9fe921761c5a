// test_sensitivity.cpp: sensitivity and variance helpers, candidate prices, budgets and the
// built-in measurement, each against an independent computation; and their rejected inputs.
#include <lowbit/mixed/budget.hpp>
#include <lowbit/mixed/sensitivity.hpp>

#include <lowbit/core/quantized_matrix.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

using namespace lowbit;
using namespace lowbit::mixed;

namespace {

MatrixXfR random_matrix(Index rows, Index cols, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, scale);
  MatrixXfR m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
  return m;
}

}  // namespace

TEST_CASE("clipped_variance: plain variance at gamma 1, clipped values below, pooled per group") {
  const MatrixXfR W = random_matrix(7, 20, 1);
  const Eigen::ArrayXd v = Eigen::Map<const Eigen::VectorXf>(W.data(), W.size()).cast<double>().array();
  CHECK(clipped_variance(W) == Approx((v - v.mean()).square().mean()).epsilon(1e-9));

  const double lo = 0.5 * double(W.minCoeff()), hi = 0.5 * double(W.maxCoeff());
  const Eigen::ArrayXd c = v.max(lo).min(hi);
  CHECK(clipped_variance(W, 0.5f) == Approx((c - c.mean()).square().mean()).epsilon(1e-9));

  // Per group of 8 (last group of each row has 4): mean of squared deviations from each group's
  // mean, over all weights.
  double sum = 0.0;
  for (Index r = 0; r < W.rows(); ++r)
    for (Index c0 = 0; c0 < W.cols(); c0 += 8) {
      const Index m = std::min<Index>(8, W.cols() - c0);
      const Eigen::ArrayXd g = W.row(r).segment(c0, m).cast<double>().transpose().array();
      sum += (g - g.mean()).square().sum();
    }
  CHECK(clipped_variance(W, 1.0f, Scheme::per_group(8, 8)) == Approx(sum / double(W.size())).epsilon(1e-9));
  CHECK(clipped_variance(MatrixXfR::Constant(3, 3, 2.0f)) == 0.0);

  CHECK_THROWS_AS(clipped_variance(MatrixXfR()), Error);
  CHECK_THROWS_AS(clipped_variance(W, 0.0f), Error);
  CHECK_THROWS_AS(clipped_variance(W, std::nanf("")), Error);
  MatrixXfR bad = W;
  bad(2, 3) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(clipped_variance(bad), Error);
  CHECK_THROWS_AS(clipped_variance(W, 1.0f, Scheme::per_group(4, 0)), Error);
}

TEST_CASE("activation_energy and gram_of") {
  const MatrixXfR X = random_matrix(50, 6, 2, 3.0f);
  const Eigen::MatrixXd G = gram_of(X);
  REQUIRE(G.rows() == 6);
  CHECK(G(1, 4) == Approx(X.col(1).cast<double>().dot(X.col(4).cast<double>())));
  CHECK(activation_energy(G) == Approx(X.cast<double>().squaredNorm() / 6.0));
  CHECK_THROWS_AS(activation_energy(Eigen::MatrixXd()), Error);
  CHECK_THROWS_AS(activation_energy(Eigen::MatrixXd::Identity(3, 4)), Error);
  CHECK_THROWS_AS(activation_energy(-Eigen::MatrixXd::Identity(3, 3)), Error);
  Eigen::MatrixXd nan_gram = G;
  nan_gram(0, 0) = std::nan("");
  CHECK_THROWS_AS(activation_energy(nan_gram), Error);
  CHECK_THROWS_AS(gram_of(MatrixXfR()), Error);
}

TEST_CASE("hutchinson_trace: exact for diagonal Hessians, unbiased for dense ones") {
  const Eigen::VectorXd d = Eigen::VectorXd::LinSpaced(12, 0.5, 6.0);
  const auto diag_hvp = [&](const Eigen::VectorXd& v) -> Eigen::VectorXd { return d.cwiseProduct(v); };
  CHECK(hutchinson_trace(diag_hvp, 12, 3) == Approx(d.sum()));

  const MatrixXfR A = random_matrix(16, 16, 3);
  const Eigen::MatrixXd H = A.cast<double>() * A.cast<double>().transpose();
  const auto hvp = [&](const Eigen::VectorXd& v) -> Eigen::VectorXd { return H * v; };
  // Var(v^T H v) = 2 * sum_{i != j} H_ij^2; 4000 samples put 4 standard errors inside the margin.
  double off = 0.0;
  for (Index i = 0; i < 16; ++i)
    for (Index j = 0; j < 16; ++j)
      if (i != j) off += H(i, j) * H(i, j);
  const double se = std::sqrt(2.0 * off / 4000.0);
  CHECK(std::abs(hutchinson_trace(hvp, 16, 4000, 7) - H.trace()) < 4.0 * se);
  CHECK(hutchinson_trace(hvp, 16, 10, 5) == hutchinson_trace(hvp, 16, 10, 5));

  CHECK_THROWS_AS(hutchinson_trace(HessianVectorProduct(), 16), Error);
  CHECK_THROWS_AS(hutchinson_trace(hvp, 0), Error);
  CHECK_THROWS_AS(hutchinson_trace(hvp, 16, 0), Error);
  CHECK_THROWS_AS(hutchinson_trace(hvp, 15), Error);  // callback returns 16 entries
  const auto nan_hvp = [](const Eigen::VectorXd& v) -> Eigen::VectorXd {
    return Eigen::VectorXd::Constant(v.size(), std::nan(""));
  };
  CHECK_THROWS_AS(hutchinson_trace(nan_hvp, 4), Error);
}

TEST_CASE("fisher_sensitivity is the mean squared gradient") {
  const std::vector<MatrixXfR> g{random_matrix(3, 5, 4), random_matrix(3, 5, 5, 2.0f)};
  const double expect = (g[0].cast<double>().squaredNorm() + g[1].cast<double>().squaredNorm()) / 30.0;
  CHECK(fisher_sensitivity(g) == Approx(expect));
  CHECK_THROWS_AS(fisher_sensitivity({}), Error);
  CHECK_THROWS_AS(fisher_sensitivity({random_matrix(3, 5, 4), random_matrix(3, 4, 4)}), Error);
  MatrixXfR bad = g[0];
  bad(0, 0) = std::nanf("");
  CHECK_THROWS_AS(fisher_sensitivity({bad}), Error);
}

TEST_CASE("weighted_output_error equals ||X (W - W_hat)^T||^2; reconstruct is core's RTN") {
  const MatrixXfR W = random_matrix(9, 24, 6);
  const MatrixXfR X = random_matrix(40, 24, 7);
  Layer l = describe_layer("fc", W, gram_of(X));
  CHECK(l.rows == 9);
  CHECK(l.cols == 24);
  CHECK(l.alpha == Approx(activation_energy(gram_of(X))));
  CHECK(l.sigma2 == Approx(clipped_variance(W)));

  const Candidate c{4, 8, true, Method::rtn};
  const MatrixXfR expect_hat = quantize_weights<4>(W, Scheme::per_group(4, 8, true)).dequantize();
  const MatrixXfR W_hat = reconstruct(l, c);
  CHECK(W_hat == expect_hat);
  const double direct = (X.cast<double>() * (W - W_hat).cast<double>().transpose()).squaredNorm();
  CHECK(weighted_output_error(W, W_hat, l.gram) == Approx(direct).epsilon(1e-9));
  CHECK(measure_output_error(l, c) == Approx(direct).epsilon(1e-9));
  CHECK(weighted_output_error(W, W_hat) == Approx((W - W_hat).cast<double>().squaredNorm()));
  CHECK(measure_output_error(l, {32, 0, true, Method::rtn}) == 0.0);
  CHECK(reconstruct(l, {16, 0, true, Method::rtn}) == W);

  // Asymmetric per-row candidate.
  const MatrixXfR asym = quantize_weights<3>(W, Scheme::per_channel(3, false)).dequantize();
  CHECK(reconstruct(l, {3, 0, false, Method::rtn}) == asym);

  CHECK_THROWS_AS(weighted_output_error(W, random_matrix(9, 23, 1), l.gram), Error);
  CHECK_THROWS_AS(weighted_output_error(W, W, Eigen::MatrixXd::Identity(5, 5)), Error);
  Layer no_weight = l;
  no_weight.weight.resize(0, 0);
  CHECK_THROWS_AS(reconstruct(no_weight, c), Error);
  Layer bad_gram = l;
  bad_gram.gram = Eigen::MatrixXd::Identity(9, 9);
  CHECK_THROWS_AS(measure_output_error(bad_gram, c), Error);
  CHECK_THROWS_AS(describe_layer("x", W, Eigen::MatrixXd::Identity(3, 3)), Error);
  CHECK_THROWS_AS(reconstruct(l, {9, 8, true, Method::rtn}), Error);
}

TEST_CASE("loss_increase_alpha makes the model reproduce the measured loss increase") {
  const MatrixXfR W = random_matrix(6, 32, 8);
  Layer l = describe_layer("fc", W);
  const double k = 3.5;
  const LayerLoss loss = [&](const MatrixXfR& w) { return 1.0 + k * (w - W).cast<double>().squaredNorm(); };
  const Candidate probe{3, 16, true, Method::rtn};
  const double alpha = loss_increase_alpha(l, loss, probe);
  const MatrixXfR W_hat = quantize_weights<3>(W, Scheme::per_group(3, 16)).dequantize();
  const double increase = k * (W - W_hat).cast<double>().squaredNorm();
  CHECK(alpha * double(l.weights()) * l.sigma2 * std::exp2(-6.0) == Approx(increase).epsilon(1e-9));
  // A loss that improves gives zero sensitivity.
  CHECK(loss_increase_alpha(l, [&](const MatrixXfR& w) { return -loss(w); }, probe) == 0.0);

  CHECK_THROWS_AS(loss_increase_alpha(l, LayerLoss(), probe), Error);
  CHECK_THROWS_AS(loss_increase_alpha(l, loss, {32, 0, true, Method::rtn}), Error);
  CHECK_THROWS_AS(loss_increase_alpha(l, [](const MatrixXfR&) { return std::nan(""); }, probe), Error);
  Layer flat = l;
  flat.sigma2 = 0.0;
  CHECK_THROWS_AS(loss_increase_alpha(flat, loss, probe), Error);
}

TEST_CASE("candidate prices are core's stored bytes; budgets and grids") {
  const MatrixXfR W = random_matrix(10, 70, 9);
  for (bool sym : {true, false}) {
    CHECK(candidate_bytes({4, 32, sym, Method::rtn}, 10, 70) ==
          quantize_weights<4>(W, Scheme::per_group(4, 32, sym)).bytes());
    CHECK(candidate_bytes({3, 0, sym, Method::gptq}, 10, 70) ==
          quantize_weights<3>(W, Scheme::per_channel(3, sym)).bytes());
    CHECK(candidate_bytes({8, 128, sym, Method::rtn}, 10, 70) ==
          quantize_weights<8>(W, Scheme::per_group(8, 128, sym)).bytes());
  }
  CHECK(candidate_bytes({32, 0, true, Method::rtn}, 10, 70) == 2800u);
  CHECK(candidate_bytes({16, 64, true, Method::rtn}, 10, 70) == 2800u);
  CHECK_THROWS_AS(candidate_bytes({1, 32, true, Method::rtn}, 10, 70), Error);
  CHECK_THROWS_AS(candidate_bytes({12, 32, true, Method::rtn}, 10, 70), Error);
  CHECK_THROWS_AS(candidate_bytes({4, -1, true, Method::rtn}, 10, 70), Error);
  CHECK_THROWS_AS(candidate_bytes({4, 32, true, Method(7)}, 10, 70), Error);
  CHECK_THROWS_AS(candidate_bytes({4, 32, true, Method::rtn}, 0, 70), Error);
  CHECK_THROWS_AS(scheme_of({32, 0, true, Method::rtn}), Error);

  CHECK(Budget::bits_per_weight(4.5).to_bytes(1000) == 562u);
  CHECK(Budget::bytes(777).to_bytes(1000) == 777u);

  const auto grid = candidate_grid({2, 4, 32}, {32, 128}, Method::gamma_search, false);
  REQUIRE(grid.size() == 5);
  CHECK(grid[1] == Candidate{2, 128, false, Method::gamma_search});
  CHECK(grid[4].keeps_float());
  CHECK(label(grid[1]) == "2b g128 asym gamma");
  CHECK(label(Candidate{3, 0, true, Method::rtn}) == "3b ch rtn");
  CHECK_THROWS_AS(candidate_grid({}, {32}), Error);
  CHECK_THROWS_AS(candidate_grid({4}, {}), Error);
  CHECK_THROWS_AS(candidate_grid({4, 10}, {32}), Error);
}

TEST_CASE("measure_costs prices and measures allowed candidates; measure_allocation") {
  std::vector<Layer> layers{describe_layer("a", random_matrix(8, 16, 10), gram_of(random_matrix(30, 16, 11))),
                            describe_layer("b", random_matrix(4, 32, 12))};
  layers[1].min_bits = 4;
  const auto cands = candidate_grid({2, 4, 8}, {16});
  const CostTable t = measure_costs(layers, cands);
  REQUIRE(t.size() == 2);
  CHECK(t[0].size() == 3);
  REQUIRE(t[1].size() == 2);  // 2 bits is below the pin
  CHECK(t[1][0].candidate.bits == 4);
  CHECK(t[0][1].distortion == Approx(measure_output_error(layers[0], cands[1])));
  CHECK(t[0][0].distortion > t[0][1].distortion);
  CHECK(t[0][1].distortion > t[0][2].distortion);
  CHECK(t[1][1].bytes == candidate_bytes(cands[2], 4, 32));

  Allocation u = uniform_allocation(layers, cands[1]);
  CHECK(u.total_bytes == candidate_bytes(cands[1], 8, 16) + candidate_bytes(cands[1], 4, 32));
  CHECK(std::isnan(u.measured_total));
  measure_allocation(layers, u);
  CHECK(u.measured_total == Approx(t[0][1].distortion + t[1][0].distortion));
  CHECK(format_report(u).find("uniform 4b g16 rtn") != std::string::npos);

  // A caller's own measurement plugs in.
  const CostTable own = measure_costs(layers, cands, [](const Layer& l, const Candidate& c) {
    return double(l.rows) / c.bits;
  });
  CHECK(own[0][0].distortion == 4.0);

  CHECK_THROWS_AS(measure_costs({}, cands), Error);
  CHECK_THROWS_AS(measure_costs(layers, {}), Error);
  CHECK_THROWS_AS(measure_costs(layers, cands, MeasureFn()), Error);
  CHECK_THROWS_AS(measure_costs(layers, cands, [](const Layer&, const Candidate&) { return -1.0; }), Error);
  CHECK_THROWS_AS(measure_costs(layers, candidate_grid({2}, {16})), Error);  // b allows none
  Allocation wrong = u;
  wrong.layers.pop_back();
  CHECK_THROWS_AS(measure_allocation(layers, wrong), Error);
}
