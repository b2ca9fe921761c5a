// test_fake_quantize.cpp: fake_quantize is dequantize(quantize(.)) bit for bit; the STE mask.
#include <lowbit/core/quantize.hpp>
#include <lowbit/qat/fake_quantize.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

using lowbit::Index;
using lowbit::MatrixXfR;
using lowbit::QuantParams;
using lowbit::Scheme;
namespace qat = lowbit::qat;

namespace {

MatrixXfR random_matrix(Index rows, Index cols, unsigned seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, sd);
  MatrixXfR x(rows, cols);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = n(rng);
  return x;
}

std::vector<Scheme> all_schemes() {
  std::vector<Scheme> out;
  for (int bits : {2, 3, 4, 8})
    for (bool sym : {true, false}) {
      out.push_back(Scheme::per_tensor(bits, sym));
      out.push_back(Scheme::per_channel(bits, sym));
      out.push_back(Scheme::per_group(bits, 32, sym));
    }
  Scheme narrow = Scheme::per_group(4, 32, true);
  narrow.narrow_range = true;
  out.push_back(narrow);
  return out;
}

// The STE mask written element by element from the definition (no block iteration).
MatrixXfR ste_reference(const MatrixXfR& gy, const MatrixXfR& x, const QuantParams& p) {
  MatrixXfR g(x.rows(), x.cols());
  for (Index r = 0; r < x.rows(); ++r)
    for (Index c = 0; c < x.cols(); ++c) {
      const auto a = p.at(lowbit::param_index(p.scheme, x.cols(), r, c));
      const float q = std::nearbyint(x(r, c) * (1.0f / a.scale)) + float(a.zero_point);
      const bool pass = q >= float(p.scheme.qmin()) && q <= float(p.scheme.qmax());
      g(r, c) = pass ? gy(r, c) : 0.0f;
    }
  return g;
}

}  // namespace

TEST_CASE("fake_quantize equals dequantize(quantize(x)) bit for bit") {
  // K = 172: per-group rows end in a partial group of 12.
  const MatrixXfR x = random_matrix(9, 172, 1);
  for (const Scheme& s : all_schemes())
    for (float gamma : {1.0f, 0.6f}) {  // gamma < 1 clips, so the clamp is exercised too
      const QuantParams p = lowbit::choose_params(x, s, gamma);
      const MatrixXfR expected = lowbit::dequantize(lowbit::quantize(x, p), p);
      const MatrixXfR got = qat::fake_quantize(x, p);
      INFO("bits " << s.bits << " sym " << s.symmetric << " gran "
                   << lowbit::to_string(s.granularity) << " gamma " << gamma);
      REQUIRE(got.rows() == x.rows());
      REQUIRE(got.cols() == x.cols());
      REQUIRE(std::memcmp(got.data(), expected.data(), sizeof(float) * size_t(x.size())) == 0);
    }
}

TEST_CASE("fake_quantize_into reuses its output and accepts aliasing") {
  const MatrixXfR x = random_matrix(4, 70, 2);
  const QuantParams p = lowbit::choose_params(x, Scheme::per_group(3, 32, false));
  const MatrixXfR expected = lowbit::dequantize(lowbit::quantize(x, p), p);
  MatrixXfR out(4, 70);
  const float* before = out.data();
  qat::fake_quantize_into(x, p, out);
  REQUIRE(out == expected);
  REQUIRE(out.data() == before);  // same shape: no reallocation
  MatrixXfR inplace = x;
  qat::fake_quantize_into(inplace, p, inplace);
  REQUIRE(inplace == expected);
  // A block view works as input.
  const MatrixXfR big = random_matrix(6, 90, 3);
  const auto view = big.block(1, 10, 4, 70);
  const QuantParams pv = lowbit::choose_params(view, Scheme::per_channel(4));
  REQUIRE(qat::fake_quantize(view, pv) == lowbit::dequantize(lowbit::quantize(view, pv), pv));
}

TEST_CASE("STE mask at the range boundaries and at ties (symmetric 4-bit, scale 1)") {
  // qmin = -8, qmax = 7; nearbyint rounds ties to even.
  const QuantParams p{Scheme::per_tensor(4, true), {1.0f}, {0}};
  MatrixXfR x(1, 12);
  x << 7.0f, 7.4f, 7.5f, 6.5f, 8.0f, -8.0f, -8.5f, -8.51f, -9.5f, 0.5f, -7.5f, 100.0f;
  //   in    in    out   in    out   in     in     out     out    in    in     out
  const float expect_pass[12] = {1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 1, 0};
  MatrixXfR gy(1, 12);
  for (Index c = 0; c < 12; ++c) gy(0, c) = 0.5f + float(c);
  const MatrixXfR g = qat::fake_quantize_backward(gy, x, p);
  for (Index c = 0; c < 12; ++c) {
    INFO("x = " << x(0, c));
    CHECK(g(0, c) == expect_pass[c] * gy(0, c));
  }
  // Forward at the same points: clamped to [-8, 7] * scale.
  const MatrixXfR y = qat::fake_quantize(x, p);
  CHECK(y(0, 2) == 7.0f);   // 7.5 -> 8 -> clamped to 7
  CHECK(y(0, 3) == 6.0f);   // tie to even
  CHECK(y(0, 6) == -8.0f);  // -8.5 -> -8
  CHECK(y(0, 8) == -8.0f);  // -9.5 -> -10 -> clamped
  CHECK(y(0, 9) == 0.0f);   // 0.5 -> 0
}

TEST_CASE("STE mask with an asymmetric zero point and narrow range") {
  // 4-bit asymmetric: codes [0, 15], scale 0.5, zero point 3: q = nearbyint(2x) + 3.
  const QuantParams p{Scheme::per_tensor(4, false), {0.5f}, {3}};
  MatrixXfR x(1, 8);
  //    2x: -3.5->-4  -2.5->-2  -3      12.5->12  13.5->14  13      0.5->0  -3.4->-3
  x << -1.75f, -1.25f, -1.5f, 6.25f, 6.75f, 6.5f, 0.25f, -1.7f;
  const float expect_pass[8] = {0, 1, 1, 1, 0, 0, 1, 1};
  const MatrixXfR gy = MatrixXfR::Constant(1, 8, -2.0f);
  const MatrixXfR g = qat::fake_quantize_backward(gy, x, p);
  for (Index c = 0; c < 8; ++c) {
    INFO("x = " << x(0, c));
    CHECK(g(0, c) == expect_pass[c] * -2.0f);
  }
  // Narrow range drops -8: -8 itself is now outside, -7.5 (tie -> -8) too, -6.5 (-> -6) inside.
  Scheme narrow = Scheme::per_tensor(4, true);
  narrow.narrow_range = true;
  const QuantParams pn{narrow, {1.0f}, {0}};
  MatrixXfR xn(1, 4);
  xn << -8.0f, -7.5f, -6.5f, -7.0f;
  const MatrixXfR gn = qat::fake_quantize_backward(MatrixXfR::Ones(1, 4), xn, pn);
  CHECK(gn(0, 0) == 0.0f);
  CHECK(gn(0, 1) == 0.0f);
  CHECK(gn(0, 2) == 1.0f);
  CHECK(gn(0, 3) == 1.0f);
}

TEST_CASE("STE backward matches the element-wise reference for every scheme") {
  const MatrixXfR x = random_matrix(7, 172, 4);
  const MatrixXfR gy = random_matrix(7, 172, 5);
  for (const Scheme& s : all_schemes()) {
    const QuantParams p = lowbit::choose_params(x, s, 0.7f);  // clip so both cases occur
    const MatrixXfR g = qat::fake_quantize_backward(gy, x, p);
    INFO("bits " << s.bits << " sym " << s.symmetric << " gran " << lowbit::to_string(s.granularity));
    REQUIRE(g == ste_reference(gy, x, p));
    REQUIRE((g.array() == 0.0f).count() > 0);
    REQUIRE((g.array() == gy.array()).count() > x.size() / 2);
  }
}

TEST_CASE("per channel and per group equal the per-tensor ops row by row and group by group") {
  const Index rows = 5, cols = 172;
  const MatrixXfR x = random_matrix(rows, cols, 6);
  const MatrixXfR gy = random_matrix(rows, cols, 7);
  for (bool sym : {true, false}) {
    for (const Scheme& s : {Scheme::per_channel(3, sym), Scheme::per_group(3, 32, sym)}) {
      const QuantParams p = lowbit::choose_params(x, s, 0.8f);
      const MatrixXfR y = qat::fake_quantize(x, p);
      const MatrixXfR g = qat::fake_quantize_backward(gy, x, p);
      lowbit::detail::for_each_block(s, rows, cols, [&](Index i, Index r, Index c0, Index c1) {
        const QuantParams pt{Scheme::per_tensor(3, sym), {p.scale[size_t(i)]},
                             {p.zero_point[size_t(i)]}};
        const MatrixXfR xb = x.block(r, c0, 1, c1 - c0);
        const MatrixXfR gb = gy.block(r, c0, 1, c1 - c0);
        REQUIRE(qat::fake_quantize(xb, pt) == y.block(r, c0, 1, c1 - c0));
        REQUIRE(qat::fake_quantize_backward(gb, xb, pt) == g.block(r, c0, 1, c1 - c0));
      });
    }
  }
}

TEST_CASE("fake_quantize ops reject bad input and leave outputs untouched") {
  const MatrixXfR x = random_matrix(3, 40, 8);
  const QuantParams good = lowbit::choose_params(x, Scheme::per_group(4, 16));
  MatrixXfR out = MatrixXfR::Constant(3, 40, 42.0f);
  const MatrixXfR untouched = out;

  QuantParams zero_scale = good;
  zero_scale.scale[2] = 0.0f;
  QuantParams neg_scale = good;
  neg_scale.scale[0] = -1.0f;
  QuantParams nan_scale = good;
  nan_scale.scale[1] = std::numeric_limits<float>::quiet_NaN();
  QuantParams short_params = good;
  short_params.scale.pop_back();
  short_params.zero_point.pop_back();
  QuantParams bad_zero = good;
  bad_zero.zero_point[0] = 1;  // symmetric needs 0
  for (const QuantParams* p : {&zero_scale, &neg_scale, &nan_scale, &short_params, &bad_zero}) {
    REQUIRE_THROWS_AS(qat::fake_quantize(x, *p), lowbit::Error);
    REQUIRE_THROWS_AS(qat::fake_quantize_into(x, *p, out), lowbit::Error);
    REQUIRE_THROWS_AS(qat::fake_quantize_backward(x, x, *p), lowbit::Error);
    REQUIRE_THROWS_AS(qat::fake_quantize_backward_into(x, x, *p, out), lowbit::Error);
  }
  REQUIRE(out == untouched);

  // Params shaped for another matrix.
  REQUIRE_THROWS_AS(qat::fake_quantize(random_matrix(4, 40, 9), good), lowbit::Error);
  // Non-finite or empty x.
  MatrixXfR bad = x;
  bad(1, 7) = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_WITH(qat::fake_quantize(bad, good), Catch::Contains("x(1, 7)"));
  bad(1, 7) = std::numeric_limits<float>::infinity();
  REQUIRE_THROWS_AS(qat::fake_quantize_backward(x, bad, good), lowbit::Error);
  REQUIRE_THROWS_AS(qat::fake_quantize(MatrixXfR(0, 0), QuantParams{Scheme::per_tensor(8), {1.0f}, {0}}),
                    lowbit::Error);
  // Gradient shape and NaN gradients.
  REQUIRE_THROWS_WITH(qat::fake_quantize_backward(MatrixXfR::Ones(3, 39), x, good),
                      Catch::Contains("grad_y"));
  MatrixXfR nan_grad = MatrixXfR::Ones(3, 40);
  nan_grad(2, 39) = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_WITH(qat::fake_quantize_backward(nan_grad, x, good), Catch::Contains("grad_y(2, 39)"));
  REQUIRE_THROWS_AS(qat::fake_quantize_backward_into(nan_grad, x, good, out), lowbit::Error);
  REQUIRE(out == untouched);
  // Bad scheme.
  QuantParams bad_bits = good;
  bad_bits.scheme.bits = 9;
  REQUIRE_THROWS_AS(qat::fake_quantize(x, bad_bits), lowbit::Error);
}
