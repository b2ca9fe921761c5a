// test_quantize.cpp: quantize/dequantize follow the numeric contract exactly.
#include <lowbit/core/quantize.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>

using lowbit::MatrixXfR;
using lowbit::MatrixXiR;
using lowbit::QuantParams;
using lowbit::Scheme;

TEST_CASE("exact ties round to even") {
  const QuantParams p{Scheme::per_tensor(8), {1.0f}, {0}};
  MatrixXfR x(1, 10);
  x << 0.5f, 1.5f, 2.5f, 3.5f, -0.5f, -1.5f, -2.5f, -3.5f, 126.5f, -127.5f;
  MatrixXiR want(1, 10);
  want << 0, 2, 2, 4, 0, -2, -2, -4, 126, -128;
  CHECK(lowbit::quantize(x, p) == want);
  // With a scale of 0.25 the ties sit at odd multiples of 0.125.
  const QuantParams q{Scheme::per_tensor(4), {0.25f}, {0}};
  MatrixXfR y(1, 4);
  y << 0.125f, 0.375f, -0.125f, -0.375f;
  MatrixXiR want_y(1, 4);
  want_y << 0, 2, 0, -2;
  CHECK(lowbit::quantize(y, q) == want_y);
}

TEST_CASE("values outside the range clamp to the end codes") {
  const QuantParams p{Scheme::per_tensor(4), {0.5f}, {0}};
  MatrixXfR x(1, 5);
  x << 100.0f, -100.0f, 3.5f, -4.0f, 3.0e38f;
  MatrixXiR want(1, 5);
  want << 7, -8, 7, -8, 7;
  CHECK(lowbit::quantize(x, p) == want);
  MatrixXfR back(1, 5);
  back << 3.5f, -4.0f, 3.5f, -4.0f, 3.5f;
  CHECK(lowbit::dequantize(want, p) == back);
  // Narrow range never produces -8.
  Scheme narrow = Scheme::per_tensor(4);
  narrow.narrow_range = true;
  const QuantParams n{narrow, {0.5f}, {0}};
  CHECK(lowbit::quantize(x, n)(0, 1) == -7);
}

TEST_CASE("asymmetric codes add the zero point before clamping") {
  const QuantParams p{Scheme::per_tensor(4, false), {0.5f}, {3}};
  MatrixXfR x(1, 6);
  x << 0.25f, 0.75f, -1.5f, -2.0f, 6.0f, 7.0f;
  // 0.5 -> 0, 1.5 -> 2, -3, -4 -> clamp at 0, 12 + 3 = 15, 14 + 3 -> 15.
  MatrixXiR want(1, 6);
  want << 3, 5, 0, 0, 15, 15;
  const MatrixXiR q = lowbit::quantize(x, p);
  CHECK(q == want);
  MatrixXfR back(1, 6);
  back << 0.0f, 1.0f, -1.5f, -1.5f, 6.0f, 6.0f;
  CHECK(lowbit::dequantize(q, p) == back);
}

TEST_CASE("round trip error is at most half a step inside the range") {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  MatrixXfR x(17, 33);
  for (lowbit::Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  for (const Scheme& s : {Scheme::per_tensor(8), Scheme::per_channel(8, false),
                          Scheme::per_group(4, 8), Scheme::per_group(3, 5, false),
                          Scheme::per_group(2, 16)}) {
    const QuantParams p = lowbit::choose_params(x, s);
    const MatrixXfR x_hat = lowbit::dequantize(lowbit::quantize(x, p), p);
    for (lowbit::Index r = 0; r < x.rows(); ++r)
      for (lowbit::Index c = 0; c < x.cols(); ++c) {
        const auto k = lowbit::param_index(s, x.cols(), r, c);
        const float scale = p.scale[size_t(k)];
        const float lo = float(s.qmin() - p.zero_point[size_t(k)]) * scale;
        const float hi = float(s.qmax() - p.zero_point[size_t(k)]) * scale;
        const float v = x(r, c);
        if (v >= lo && v <= hi)
          REQUIRE(std::abs(v - x_hat(r, c)) <= 0.5f * scale * (1.0f + 1e-5f));
        else  // only the symmetric positive end can lie outside (max maps to qmax + 0.5)
          REQUIRE(std::abs(x_hat(r, c) - (v > hi ? hi : lo)) == 0.0f);
      }
  }
}

TEST_CASE("gamma below one clips the largest values and refines the rest") {
  MatrixXfR x(1, 101);
  for (int i = 0; i <= 100; ++i) x(0, i) = -1.0f + 0.02f * float(i);
  const Scheme s = Scheme::per_tensor(4);
  const QuantParams full = lowbit::choose_params(x, s, 1.0f);
  const QuantParams clip = lowbit::choose_params(x, s, 0.5f);
  CHECK(clip.scale[0] == Approx(full.scale[0] / 2));
  const MatrixXfR a = lowbit::dequantize(lowbit::quantize(x, clip), clip);
  // Everything beyond the clipped range lands on the end codes.
  CHECK(a(0, 100) == 7 * clip.scale[0]);
  CHECK(a(0, 0) == -8 * clip.scale[0]);
  // Inside |x| <= 0.4 the finer step halves the worst error.
  const MatrixXfR b = lowbit::dequantize(lowbit::quantize(x, full), full);
  float worst_clip = 0, worst_full = 0;
  for (int i = 30; i <= 70; ++i) {
    worst_clip = std::max(worst_clip, std::abs(a(0, i) - x(0, i)));
    worst_full = std::max(worst_full, std::abs(b(0, i) - x(0, i)));
  }
  CHECK(worst_clip <= 0.5f * clip.scale[0] * 1.0001f);
  CHECK(worst_clip < worst_full);
}

TEST_CASE("per-channel and per-group quantization use each block's own parameters") {
  MatrixXfR x(2, 3);
  x << 1.0f, 2.0f, 3.0f, 1.0f, 2.0f, 3.0f;
  const QuantParams pc{Scheme::per_channel(8), {1.0f, 0.5f}, {0, 0}};
  MatrixXiR want(2, 3);
  want << 1, 2, 3, 2, 4, 6;
  CHECK(lowbit::quantize(x, pc) == want);
  const QuantParams pg{Scheme::per_group(8, 2, false), {1.0f, 0.5f, 1.0f, 0.25f}, {0, 10, 5, 0}};
  want << 1, 2, 16, 6, 7, 12;
  CHECK(lowbit::quantize(x, pg) == want);
}

TEST_CASE("quantize and dequantize reject bad input before writing anything") {
  const QuantParams p{Scheme::per_channel(8), {1.0f, 1.0f}, {0, 0}};
  MatrixXfR x = MatrixXfR::Zero(2, 3);
  CHECK_THROWS_WITH(lowbit::quantize(MatrixXfR(0, 0), p), Catch::Contains("non-empty"));
  x(0, 1) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(lowbit::quantize(x, p), Catch::Contains("x(0, 1)"));
  x(0, 1) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(lowbit::quantize(x, p), lowbit::Error);
  x(0, 1) = 0;
  CHECK_THROWS_WITH(lowbit::quantize(MatrixXfR::Zero(3, 3), p), Catch::Contains("params.scale"));
  const QuantParams bad_scale{Scheme::per_channel(8), {1.0f, -1.0f}, {0, 0}};
  CHECK_THROWS_WITH(lowbit::quantize(x, bad_scale), Catch::Contains("params.scale[1]"));
  const QuantParams bad_zp{Scheme::per_channel(8, false), {1.0f, 1.0f}, {0, 300}};
  CHECK_THROWS_WITH(lowbit::quantize(x, bad_zp), Catch::Contains("params.zero_point[1]"));
  const QuantParams bad_bits{Scheme::per_channel(9), {1.0f, 1.0f}, {0, 0}};
  CHECK_THROWS_AS(lowbit::quantize(x, bad_bits), lowbit::Error);

  MatrixXiR codes = MatrixXiR::Zero(2, 3);
  codes(1, 2) = 128;
  CHECK_THROWS_WITH(lowbit::dequantize(codes, p), Catch::Contains("codes(1, 2)"));
  codes(1, 2) = -129;
  CHECK_THROWS_AS(lowbit::dequantize(codes, p), lowbit::Error);
  CHECK_THROWS_AS(lowbit::dequantize(MatrixXiR(0, 3), p), lowbit::Error);
  CHECK_THROWS_AS(lowbit::dequantize(MatrixXiR::Zero(2, 3), bad_zp), lowbit::Error);
}
