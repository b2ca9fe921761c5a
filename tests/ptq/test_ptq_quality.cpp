// test_ptq_quality.cpp: every weight-PTQ method on a synthetic layer with LLM-like statistics,
// measured against RTN on the calibration tokens and on held-out tokens. Prints the ratios.
#include <lowbit/ptq/awq.hpp>
#include <lowbit/ptq/gamma_search.hpp>
#include <lowbit/ptq/gptq.hpp>
#include <lowbit/ptq/rtn.hpp>
#include <lowbit/ptq/smoothquant.hpp>

#include <catch2/catch.hpp>

#include "synthetic.hpp"

#include <cstdio>

using namespace lowbit;

namespace {

using test::kIn;
using test::kOut;
using test::layer;
using test::SyntheticLayer;

struct Ratios {
  double cal, held;
};

// Output error of W_hat over RTN's, on the calibration and the held-out tokens (from their Gram
// matrices: ‖X·Δᵀ‖² = Σ_r Δ_r·XᵀX·Δ_rᵀ, checked against the tokens in test_gamma_search).
Ratios ratios(const MatrixXfR& W_hat, const MatrixXfR& rtn_hat, const ptq::Calibration& cal) {
  const SyntheticLayer& l = layer();
  return {ptq::output_error(l.W, W_hat, cal) / ptq::output_error(l.W, rtn_hat, cal),
          ptq::output_error(l.W, W_hat, l.held) / ptq::output_error(l.W, rtn_hat, l.held)};
}

}  // namespace

TEST_CASE("GPTQ, AWQ and γ-search beat RTN on calibration and held-out tokens (INT4/INT3 g128)") {
  const SyntheticLayer& l = layer();
  const ptq::Calibration& calib = l.cal;
  for (int bits : {4, 3}) {
    const Scheme s = Scheme::per_group(bits, 128, false);
    const MatrixXfR rtn = ptq::rtn(l.W, s).dequantize();
    const Ratios gamma = ratios(ptq::search_gamma(l.W, s, calib).dequantize(), rtn, calib);
    const Ratios gptq = ratios(ptq::gptq(l.W, s, calib).dequantize(), rtn, calib);
    ptq::GptqOptions o;
    o.act_order = false;
    const Ratios gptq_nat = ratios(ptq::gptq(l.W, s, calib, o).dequantize(), rtn, calib);
    o.act_order = true;
    o.clip_search = false;
    const Ratios gptq_plain = ratios(ptq::gptq(l.W, s, calib, o).dequantize(), rtn, calib);
    const Ratios awq = ratios(ptq::awq(l.W, s, calib).effective_weight(), rtn, calib);
    ptq::AwqOptions no_clip;
    no_clip.clip_search = false;
    const Ratios awq_nc = ratios(ptq::awq(l.W, s, calib, no_clip).effective_weight(), rtn, calib);
    std::printf("INT%d g128 asym, %ldx%ld, 2048 calibration / 2048 held-out tokens: output error vs RTN\n",
                bits, long(kOut), long(kIn));
    std::printf("  gamma-search      cal %.3f  held-out %.3f\n", gamma.cal, gamma.held);
    std::printf("  GPTQ (act-order, clip search)  cal %.3f  held-out %.3f\n", gptq.cal, gptq.held);
    std::printf("  GPTQ (natural order, clip)     cal %.3f  held-out %.3f\n", gptq_nat.cal, gptq_nat.held);
    std::printf("  GPTQ (act-order, min-max)      cal %.3f  held-out %.3f\n", gptq_plain.cal, gptq_plain.held);
    std::printf("  AWQ (scale+clip)  cal %.3f  held-out %.3f\n", awq.cal, awq.held);
    std::printf("  AWQ (scale only)  cal %.3f  held-out %.3f\n", awq_nc.cal, awq_nc.held);
    INFO("INT" << bits);
    CHECK(gamma.cal <= 1.0);
    CHECK(gamma.held < 1.0);
    CHECK(gptq.cal <= 0.7);
    CHECK(gptq.held <= 0.7);
    CHECK(gptq_plain.cal <= 0.7);
    CHECK(gptq_plain.held <= 0.7);
    CHECK(awq.cal <= 0.85);
    CHECK(awq.held <= 0.85);
  }
}

TEST_CASE("GPTQ overfits few calibration tokens; it needs several times in_features") {
  // Weakly correlated activations (noise as large as the low-rank part) make overfitting visible.
  // (With far fewer tokens than in_features the dampening dominates H and GPTQ drifts back
  // towards RTN; the worst case is around in_features tokens.)
  const SyntheticLayer& l = layer();
  test::ActivationModel model{kIn, 32, 4, 102};
  model.noise = 1.0f;
  const MatrixXfR X = model.sample(4096, 105);
  const ptq::Calibration held = ptq::detail::calibrate(model.sample(2048, 106), kIn);
  const Scheme s = Scheme::per_group(4, 128, false);
  const MatrixXfR rtn = ptq::rtn(l.W, s).dequantize();
  const double rtn_held = ptq::output_error(l.W, rtn, held);
  ptq::GptqOptions plain;
  plain.clip_search = false;
  std::printf("GPTQ INT4 g128 act-order, noise 1.0, in_features %ld: output error vs RTN\n", long(kIn));
  std::printf("  tokens   min-max cal / held-out   clip search cal / held-out\n");
  for (Index n : {128, 512, 2048, 4096}) {
    const ptq::Calibration c = ptq::detail::calibrate(X.topRows(n), kIn);
    const double rtn_cal = ptq::output_error(l.W, rtn, c);
    const MatrixXfR a = ptq::gptq(l.W, s, c, plain).dequantize(), b = ptq::gptq(l.W, s, c).dequantize();
    const double a_cal = ptq::output_error(l.W, a, c) / rtn_cal, a_held = ptq::output_error(l.W, a, held) / rtn_held;
    const double b_cal = ptq::output_error(l.W, b, c) / rtn_cal, b_held = ptq::output_error(l.W, b, held) / rtn_held;
    std::printf("  %5ld    %.3f / %.3f            %.3f / %.3f\n", long(n), a_cal, a_held, b_cal, b_held);
    INFO(n << " tokens");
    CHECK(a_cal < 0.5);  // always fits the calibration set
    if (n == kIn) CHECK(a_held > 1.0);  // ... but with in_features tokens loses to RTN on new ones
    if (n >= 4 * kIn) CHECK(a_held <= 0.7);
    if (n >= 4 * kIn) CHECK(b_held <= 0.5);
  }
}

TEST_CASE("SmoothQuant reduces W8A8 output error on activations with outlier channels") {
  const SyntheticLayer& l = layer();
  // W8A8: weights INT8 per channel, activations INT8 per tensor (static range of the tokens).
  const auto w8a8 = [&](const MatrixXfR& W, const MatrixXfR& X) {
    const auto pw = choose_params(W, Scheme::per_channel(8));
    const auto px = choose_params(X, Scheme::per_tensor(8));
    return MatrixXfR(dequantize(quantize(X, px), px) * dequantize(quantize(W, pw), pw).transpose());
  };
  const MatrixXfR Y = l.X_held * l.W.transpose();
  const auto err = [&](const MatrixXfR& Y_hat) { return (Y - Y_hat).squaredNorm() / double(Y.size()); };
  const double plain = err(w8a8(l.W, l.X_held));
  const auto sq = ptq::smoothquant(l.W, l.X_cal, 0.5f);
  // Exact identity before quantization.
  const MatrixXfR X_div = l.X_held.array().rowwise() / sq.act_divisor.transpose().array();
  REQUIRE((X_div * sq.weight.transpose()).isApprox(Y, 1e-4f));
  const double smooth = err(w8a8(sq.weight, X_div));
  std::printf("SmoothQuant alpha 0.5, W8A8 held-out output error vs plain W8A8: %.3f\n", smooth / plain);
  CHECK(smooth < 0.5 * plain);
  // The closed form of the scales.
  for (Index j = 0; j < kIn; j += 37) {
    const double xmax = l.X_cal.col(j).cwiseAbs().maxCoeff(), wmax = l.W.col(j).cwiseAbs().maxCoeff();
    REQUIRE(sq.act_divisor[j] == Approx(std::sqrt(xmax) / std::sqrt(wmax)).epsilon(1e-5));
  }
  // alpha = 0 moves everything by 1 / max|W_j|: weights' columns peak at exactly 1.
  const auto sq0 = ptq::smoothquant(l.W, l.X_cal, 0.0f);
  REQUIRE(sq0.weight.cwiseAbs().colwise().maxCoeff().isApprox(Eigen::RowVectorXf::Ones(kIn), 1e-6f));
}

TEST_CASE("every method on small Llama shapes, group 32 with a partial last group (K = 172)") {
  const std::pair<Index, Index> shapes[] = {{64, 64}, {32, 64}, {172, 64}, {64, 172}};
  for (const auto& [out, in] : shapes) {
    const MatrixXfR W = test::heavy_tailed_weight(out, in, unsigned(out * 1000 + in));
    const test::ActivationModel model(in, 8, 2, unsigned(in));
    const ptq::Calibration c = ptq::detail::calibrate(model.sample(512, 7), in);
    for (const Scheme& s : {Scheme::per_group(4, 32), Scheme::per_group(3, 32, false), Scheme::per_channel(8)}) {
      INFO(out << "x" << in << " " << s.bits << "-bit " << to_string(s.granularity));
      const auto rtn = ptq::rtn(W, s, c);
      const auto gamma = ptq::search_gamma(W, s, c);
      const auto gptq = ptq::gptq(W, s, c);
      const auto awq = ptq::awq(W, s, c);
      for (const ptq::Result* r : {&rtn, &gamma, &gptq, &awq.quant}) {
        REQUIRE(r->codes.rows() == out);
        REQUIRE(r->codes.cols() == in);
        REQUIRE(r->params.scale.size() == size_t(param_count(s, out, in)));
        validate_codes(r->codes, s);
        REQUIRE(r->report.tokens == 512);
      }
      CHECK(gamma.report.output_mse <= rtn.report.output_mse * (1 + 1e-5));
      CHECK(gptq.report.output_mse < rtn.report.output_mse);
      CHECK(awq.quant.report.output_mse <= rtn.report.output_mse * (1 + 1e-5));
      REQUIRE(awq.quant.report.output_mse ==
              Approx(ptq::output_error(W, awq.effective_weight(), c)).epsilon(1e-6));
    }
  }
}
