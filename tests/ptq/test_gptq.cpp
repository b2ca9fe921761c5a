// test_gptq.cpp: GPTQ against closed forms, a naive OBQ reference, and its failure modes.
#include <lowbit/ptq/gptq.hpp>
#include <lowbit/ptq/rtn.hpp>

#include <catch2/catch.hpp>

#include <Eigen/LU>

#include "synthetic.hpp"

#include <limits>

using namespace lowbit;

namespace {

// Fraction of codes that differ.
double code_mismatch(const MatrixXiR& a, const MatrixXiR& b) {
  return double((a.array() != b.array()).count()) / double(a.size());
}

// OBQ's update written directly (Frantar & Alistarh 2022), in double: quantize column q, move the
// remaining columns by -(w_q - Q(w_q)) / Hinv_qq * Hinv_{:,q}, then remove q from Hinv by one
// Gaussian elimination step. Parameters fixed up front (per channel), natural column order.
MatrixXiR naive_obq(const MatrixXfR& W, const Scheme& s, const Eigen::MatrixXd& H) {
  const QuantParams p = choose_params(W, s);
  Eigen::MatrixXd Hinv = H.inverse();
  Eigen::MatrixXd w = W.cast<double>();
  MatrixXiR codes(W.rows(), W.cols());
  for (Index q = 0; q < W.cols(); ++q) {
    for (Index r = 0; r < W.rows(); ++r) {
      const AffineParams a = p.at(param_index(s, W.cols(), r, q));
      codes(r, q) = quantize_value(float(w(r, q)), 1.0f / a.scale, a.zero_point, s.qmin(), s.qmax());
      const double e = w(r, q) - double(dequantize_value(codes(r, q), a.scale, a.zero_point));
      for (Index j = q + 1; j < W.cols(); ++j) w(r, j) -= e / Hinv(q, q) * Hinv(j, q);
    }
    const Eigen::VectorXd col = Hinv.col(q);
    Hinv -= col * col.transpose() / col[q];
  }
  return codes;
}

}  // namespace

TEST_CASE("the inverse-Hessian factor U satisfies UᵀU = (H + damp·I)⁻¹, U upper") {
  const MatrixXfR X = test::ActivationModel(40, 5, 2, 1).sample(100, 2);
  const Eigen::MatrixXd H = 2.0 * X.cast<double>().transpose() * X.cast<double>();
  const double damp = 0.01 * H.diagonal().mean();
  const Eigen::MatrixXd U = ptq::detail::inverse_hessian_factor(H, damp, 0).cast<double>();
  const Eigen::MatrixXd Hd = H + damp * Eigen::MatrixXd::Identity(40, 40);
  REQUIRE(U.triangularView<Eigen::StrictlyLower>().toDenseMatrix().isZero());
  REQUIRE((U.transpose() * U * Hd).isApprox(Eigen::MatrixXd::Identity(40, 40), 1e-3));
  REQUIRE(U.diagonal().minCoeff() > 0.0);
}

TEST_CASE("GPTQ with one column is RTN") {
  const MatrixXfR W = test::heavy_tailed_weight(20, 1, 3);
  const MatrixXfR X = test::ActivationModel(1, 1, 0, 4).sample(50, 5);
  for (const Scheme& s : {Scheme::per_tensor(4), Scheme::per_channel(3, false), Scheme::per_group(4, 32)}) {
    const auto g = ptq::gptq(W, s, X);
    REQUIRE(g.codes == ptq::rtn(W, s).codes);
    REQUIRE(g.params.scale == ptq::rtn(W, s).params.scale);
  }
}

TEST_CASE("GPTQ with a diagonal Hessian is RTN (no error feedback), with and without act-order") {
  const MatrixXfR W = test::heavy_tailed_weight(16, 70, 6);  // 70: partial last group of 32
  Eigen::MatrixXd identity = Eigen::MatrixXd::Identity(70, 70) * 50.0;
  Eigen::MatrixXd diag = Eigen::MatrixXd::Zero(70, 70);
  for (Index i = 0; i < 70; ++i) diag(i, i) = 1.0 + double((i * 37) % 70);
  for (const auto& gram : {identity, diag})
    for (bool act_order : {false, true})
      for (const Scheme& s : {Scheme::per_channel(4), Scheme::per_group(3, 32, false), Scheme::per_group(4, 16)}) {
        ptq::GptqOptions o;
        o.act_order = act_order;
        o.block_size = 20;
        const auto g = ptq::gptq(W, s, ptq::Calibration::from_gram(gram, 50), o);
        const auto r = ptq::rtn(W, s);
        REQUIRE(g.codes == r.codes);
        REQUIRE(g.params.scale == r.params.scale);
        REQUIRE(g.params.zero_point == r.params.zero_point);
      }
}

TEST_CASE("GPTQ on two columns moves the second by the closed-form OBS update") {
  const MatrixXfR W = test::heavy_tailed_weight(9, 2, 7);
  Eigen::MatrixXd gram(2, 2);
  gram << 4.0, 1.5, 1.5, 2.0;
  ptq::GptqOptions o;
  o.damp = 0.0f;
  o.act_order = false;
  const Scheme s = Scheme::per_channel(3);
  const auto g = ptq::gptq(W, s, ptq::Calibration::from_gram(gram, 10), o);
  const QuantParams p = choose_params(W, s);
  for (Index r = 0; r < W.rows(); ++r) {
    const AffineParams a = p.at(r);
    const int32_t q0 = quantize_value(W(r, 0), 1.0f / a.scale, a.zero_point, s.qmin(), s.qmax());
    // Optimal w1 given q0: w1 + (w0 - q0_hat) * H01 / H11.
    const float w1 = W(r, 1) + (W(r, 0) - dequantize_value(q0, a.scale, 0)) * 1.5f / 2.0f;
    REQUIRE(g.codes(r, 0) == q0);
    REQUIRE(g.codes(r, 1) == quantize_value(w1, 1.0f / a.scale, a.zero_point, s.qmin(), s.qmax()));
  }
}

TEST_CASE("GPTQ matches a naive OBQ implementation; lazy blocks do not change the result") {
  const MatrixXfR W = test::heavy_tailed_weight(12, 48, 8);
  const MatrixXfR X = test::ActivationModel(48, 6, 2, 9).sample(200, 10);
  const Eigen::MatrixXd H = 2.0 * X.cast<double>().transpose() * X.cast<double>();
  const Eigen::MatrixXd Hd = H + 0.01 * H.diagonal().mean() * Eigen::MatrixXd::Identity(48, 48);
  const Scheme s = Scheme::per_channel(4);
  ptq::GptqOptions o;
  o.act_order = false;
  const MatrixXiR ref = naive_obq(W, s, Hd);
  for (Index bs : {1, 7, 128}) {
    o.block_size = bs;
    const auto g = ptq::gptq(W, s, X, o);
    INFO("block size " << bs);
    REQUIRE(code_mismatch(g.codes, ref) <= 0.01);
  }
  // Grouped, act-order: block size changes only float rounding.
  o.act_order = true;
  o.block_size = 128;
  const auto a = ptq::gptq(W, Scheme::per_group(4, 16), X, o);
  o.block_size = 5;
  const auto b = ptq::gptq(W, Scheme::per_group(4, 16), X, o);
  REQUIRE(code_mismatch(a.codes, b.codes) <= 0.01);
  REQUIRE(a.report.output_mse == Approx(b.report.output_mse).epsilon(0.02));
}

TEST_CASE("GPTQ quantizes dead inputs as zero weights") {
  const MatrixXfR W = test::heavy_tailed_weight(10, 40, 11);
  MatrixXfR X = test::ActivationModel(40, 4, 1, 12).sample(100, 13);
  X.col(3).setZero();
  X.col(17).setZero();
  const Scheme s = Scheme::per_group(4, 16, false);
  const auto g = ptq::gptq(W, s, X);
  const MatrixXfR W_hat = g.dequantize();
  REQUIRE(W_hat.col(3).isZero());
  REQUIRE(W_hat.col(17).isZero());
  REQUIRE(g.report.output_mse < ptq::rtn(W, s, X).report.output_mse);
}

TEST_CASE("GPTQ rejects bad input and Hessians it cannot factorise") {
  const MatrixXfR W = test::heavy_tailed_weight(6, 8, 14);
  const MatrixXfR X = test::ActivationModel(8, 2, 0, 15).sample(20, 16);
  const Scheme s = Scheme::per_group(4, 4);
  MatrixXfR bad = W;
  bad(1, 1) = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_AS(ptq::gptq(bad, s, X), Error);
  MatrixXfR badX = X;
  badX(3, 2) = -std::numeric_limits<float>::infinity();
  REQUIRE_THROWS_AS(ptq::gptq(W, s, badX), Error);
  REQUIRE_THROWS_AS(ptq::gptq(W, s, MatrixXfR(20, 7)), Error);
  REQUIRE_THROWS_AS(ptq::gptq(W, s, MatrixXfR(0, 8)), Error);
  REQUIRE_THROWS_AS(ptq::gptq(W, s, ptq::Calibration(8)), Error);
  REQUIRE_THROWS_AS(ptq::gptq(W, Scheme::per_group(1, 4), X), Error);
  ptq::GptqOptions o;
  o.damp = -0.1f;
  REQUIRE_THROWS_AS(ptq::gptq(W, s, X, o), Error);
  o = {};
  o.block_size = 0;
  REQUIRE_THROWS_AS(ptq::gptq(W, s, X, o), Error);
  o = {};
  o.damp_retries = -1;
  REQUIRE_THROWS_AS(ptq::gptq(W, s, X, o), Error);
  // An indefinite "Gram" matrix stays indefinite after dampening 0.01 -> 0.1 -> 1 x mean diag.
  Eigen::MatrixXd indefinite(2, 2);
  indefinite << 1.0, 3.0, 3.0, 1.0;
  const MatrixXfR W2 = test::heavy_tailed_weight(3, 2, 17);
  REQUIRE_THROWS_WITH(ptq::gptq(W2, Scheme::per_channel(4), ptq::Calibration::from_gram(indefinite, 4)),
                      Catch::Contains("not positive definite"));
  // Rank-deficient H without dampening fails; with the default retries it is rescued.
  const MatrixXfR few = X.topRows(3);
  o = {};
  o.damp = 0.0f;
  o.damp_retries = 0;
  REQUIRE_THROWS_AS(ptq::gptq(W, s, few, o), Error);
  o.damp_retries = 2;
  o.damp = 1e-9f;
  REQUIRE_NOTHROW(ptq::gptq(W, s, few, o));
}
