// test_gemm_linear.cpp: linear()'s math against brute force, its epilogue and its input checks.
#include "gemm_test_util.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

using namespace lowbit;

namespace {

/// Integer activations with a row range of exactly 254 (int8) or 255 (uint8) units around 0, so
/// the activation scale is 1 and the codes are x itself (plus the zero point).
MatrixXfR unit_scale_x(Index M, Index K, bool asym, std::mt19937& rng) {
  std::uniform_int_distribution<int> v(asym ? -100 : -127, asym ? 155 : 127);
  MatrixXfR x(M, K);
  for (Index m = 0; m < M; ++m) {
    for (Index k = 0; k < K; ++k) x(m, k) = float(v(rng));
    x(m, 0) = asym ? -100.0f : 127.0f;
    if (K > 1) x(m, K - 1) = asym ? 155.0f : -127.0f;
  }
  return x;
}

}  // namespace

TEST_CASE("integer linear() equals the exact integer product when scales are 1", "[gemm][linear]") {
  std::mt19937 rng(11);
  for (bool asym_x : {false, true})
    for (int bits : {8, 4, 3, 2, 6})
      for (bool sym_w : {true, false})
        for (int gs : {0, 32}) {
          const Index M = 3, N = 21, K = 70;
          const Scheme s = gs ? Scheme::per_group(bits, gs, sym_w) : Scheme::per_channel(bits, sym_w);
          MatrixXfR wf;
          const auto w = test::random_packed(bits, N, K, s, rng, test::Codes::random, &wf, true);
          const MatrixXfR x = unit_scale_x(M, K, asym_x, rng);
          LinearOptions opt;
          opt.activations = asym_x ? ActivationQuant::uint8 : ActivationQuant::int8;
          const MatrixXfR y = linear(x, w, opt);
          for (Index m = 0; m < M; ++m)
            for (Index n = 0; n < N; ++n) {
              double exact = 0;
              for (Index k = 0; k < K; ++k) exact += double(x(m, k)) * double(wf(n, k));
              REQUIRE(y(m, n) == float(exact));
            }
        }
}

TEST_CASE("linear() approximates x * dequantize(W)^T", "[gemm][linear]") {
  std::mt19937 rng(12);
  const Index M = 5, N = 40, K = 172;
  for (int bits : {8, 4})
    for (bool sym_w : {true, false}) {
      const Scheme s = bits == 8 ? Scheme::per_channel(8, sym_w) : Scheme::per_group(4, 32, sym_w);
      MatrixXfR wf;
      const auto w = test::random_packed(bits, N, K, s, rng, test::Codes::random, &wf);
      const MatrixXfR x = test::random_x(M, K, rng);
      const MatrixXfR exact = x * wf.transpose();
      const float norm = exact.cwiseAbs().maxCoeff();
      for (auto mode : {ActivationQuant::float32, ActivationQuant::int8, ActivationQuant::uint8,
                        ActivationQuant::int8_per_group}) {
        if (mode == ActivationQuant::int8_per_group && bits == 8) continue;
        LinearOptions opt;
        opt.activations = mode;
        const MatrixXfR y = linear(x, w, opt);
        // fp32 activations: only rounding (and fp16 scales); int8 activations: ~1% of the range.
        const float tol = mode == ActivationQuant::float32 ? (bits == 4 ? 2e-3f : 1e-5f) * norm : 0.03f * norm;
        CHECK((y - exact).cwiseAbs().maxCoeff() <= tol);
      }
    }
}

TEST_CASE("the epilogue adds bias, applies relu/silu and clamps, in that order", "[gemm][linear]") {
  std::mt19937 rng(13);
  const Index M = 4, N = 20, K = 33;
  const auto w = test::random_packed(8, N, K, Scheme::per_channel(8), rng);
  const MatrixXfR x = test::random_x(M, K, rng);
  const MatrixXfR plain = linear(x, w);
  LinearOptions opt;
  for (Index n = 0; n < N; ++n) opt.epilogue.bias.push_back(0.01f * float(n) - 0.1f);
  opt.epilogue.clamp_min = -0.05f;
  opt.epilogue.clamp_max = 0.2f;
  for (Activation act : {Activation::none, Activation::relu, Activation::silu}) {
    opt.epilogue.activation = act;
    const MatrixXfR y = linear(x, w, opt);
    for (Index m = 0; m < M; ++m)
      for (Index n = 0; n < N; ++n) {
        float v = plain(m, n) + opt.epilogue.bias[size_t(n)];
        if (act == Activation::relu) v = std::max(v, 0.0f);
        if (act == Activation::silu) v = v / (1.0f + std::exp(-v));
        v = std::min(std::max(v, -0.05f), 0.2f);
        REQUIRE(y(m, n) == v);
      }
  }
}

TEST_CASE("linear() overloads agree and honour strides", "[gemm][linear]") {
  std::mt19937 rng(14);
  const Index M = 3, N = 17, K = 40;
  const auto w = test::random_packed(4, N, K, Scheme::per_group(4, 32), rng);
  MatrixXfR big = test::random_x(M, K + 5, rng);
  const MatrixXfR x = big.leftCols(K);
  const MatrixXfR y0 = linear(x, w);
  MatrixXfR out = MatrixXfR::Constant(M, N + 3, 7.0f);
  linear(big.data(), M, K, K + 5, w, out.data(), N + 3);
  CHECK(out.leftCols(N) == y0);
  CHECK((out.rightCols(3).array() == 7.0f).all());
  MatrixXfR y1(M, N);
  linear(big.leftCols(K), w, y1);
  CHECK(y1 == y0);
}

TEST_CASE("linear() rejects bad input before writing", "[gemm][linear]") {
  std::mt19937 rng(15);
  const Index M = 2, N = 8, K = 16;
  const auto w = test::random_packed(8, N, K, Scheme::per_channel(8), rng);
  const auto w4c = test::random_packed(4, N, K, Scheme::per_channel(4), rng);
  MatrixXfR x = test::random_x(M, K, rng);
  MatrixXfR y = MatrixXfR::Constant(M, N, 5.0f);
  LinearOptions opt;

  CHECK_THROWS_WITH(linear(x, PackedWeights{}), Catch::Contains("empty PackedWeights"));
  CHECK_THROWS_WITH(linear(MatrixXfR(M, K + 1).setZero(), w), Catch::Contains("columns"));
  CHECK_THROWS_WITH(linear(MatrixXfR(0, K), w), Catch::Contains("non-empty"));
  MatrixXfR bad = x;
  bad(1, 3) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(linear(bad, w, y), Catch::Contains("x(1, 3)"));
  bad(1, 3) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(linear(bad, w, y), Catch::Contains("finite"));
  MatrixXfR ybad(M, N + 1);
  CHECK_THROWS_WITH(linear(x, w, ybad), Catch::Contains("y: expected"));
  CHECK_THROWS_WITH(linear(x.data(), M, K, K - 1, w, y.data(), N), Catch::Contains("ldx"));
  CHECK_THROWS_WITH(linear(x.data(), M, K, K, w, y.data(), N - 1), Catch::Contains("ldy"));
  CHECK_THROWS_WITH(linear(nullptr, M, K, K, w, y.data(), N), Catch::Contains("non-null"));
  CHECK_THROWS_WITH(linear(x.data(), 0, K, K, w, y.data(), N), Catch::Contains("row"));

  opt.activations = ActivationQuant(42);
  CHECK_THROWS_WITH(linear(x, w, y, opt), Catch::Contains("options.activations"));
  opt.activations = ActivationQuant::int8_per_group;
  CHECK_THROWS_WITH(linear(x, w4c, y, opt), Catch::Contains("per-group"));
  opt = {};
  opt.epilogue.bias = {1.0f, 2.0f};
  CHECK_THROWS_WITH(linear(x, w, y, opt), Catch::Contains("epilogue.bias"));
  opt.epilogue.bias.assign(N, 0.0f);
  opt.epilogue.bias[3] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(linear(x, w, y, opt), Catch::Contains("epilogue.bias[3]"));
  opt = {};
  opt.epilogue.activation = Activation(9);
  CHECK_THROWS_WITH(linear(x, w, y, opt), Catch::Contains("epilogue.activation"));
  opt = {};
  opt.epilogue.clamp_min = 1.0f;
  opt.epilogue.clamp_max = 0.0f;
  CHECK_THROWS_WITH(linear(x, w, y, opt), Catch::Contains("clamp"));
  opt.epilogue.clamp_min = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(linear(x, w, y, opt), Catch::Contains("clamp"));
  CHECK((y.array() == 5.0f).all());  // nothing written by any rejected call
}
