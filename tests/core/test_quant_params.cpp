// test_quant_params.cpp: ranges become scales and zero points as MinMaxObserver computes them.
#include <lowbit/core/quant_params.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

using lowbit::Scheme;

namespace {
const float eps = std::numeric_limits<float>::epsilon();
}

TEST_CASE("symmetric scale is amax / ((qmax - qmin) / 2)") {
  // INT8 [-128, 127]: (qmax - qmin) / 2 = 127.5.
  auto p = lowbit::params_from_range(-1.0f, 2.0f, Scheme::per_tensor(8));
  CHECK(p.scale == 2.0f / 127.5f);
  CHECK(p.zero_point == 0);
  p = lowbit::params_from_range(-3.0f, 2.0f, Scheme::per_tensor(4));  // [-8, 7]: 7.5
  CHECK(p.scale == 3.0f / 7.5f);
  Scheme narrow = Scheme::per_tensor(8);
  narrow.narrow_range = true;  // [-127, 127]: 127
  CHECK(lowbit::params_from_range(-1.0f, 0.5f, narrow).scale == 1.0f / 127.0f);
}

TEST_CASE("asymmetric scale and zero point from the range widened to include zero") {
  // [-1, 2] over [0, 255]: scale 3/255, zero point 0 - round(-1 / scale) = 85.
  auto p = lowbit::params_from_range(-1.0f, 2.0f, Scheme::per_tensor(8, false));
  CHECK(p.scale == 3.0f / 255.0f);
  CHECK(p.zero_point == 85);
  // Positive-only range: widened to [0, 2], zero point 0.
  p = lowbit::params_from_range(0.5f, 2.0f, Scheme::per_tensor(8, false));
  CHECK(p.scale == 2.0f / 255.0f);
  CHECK(p.zero_point == 0);
  // Negative-only range: widened to [-3, 0], zero point at the top code.
  p = lowbit::params_from_range(-3.0f, -1.0f, Scheme::per_tensor(4, false));
  CHECK(p.scale == 3.0f / 15.0f);
  CHECK(p.zero_point == 15);
  // [-0.2, 1] at 4 bits: scale 1.2/15 = 0.08; -0.2/0.08 is about -2.5 and rounds to -2, zp 2.
  p = lowbit::params_from_range(-0.2f, 1.0f, Scheme::per_tensor(4, false));
  CHECK(p.scale == Approx(0.08f));
  CHECK(p.zero_point == 2);
}

TEST_CASE("an empty range floors the scale at float epsilon") {
  auto p = lowbit::params_from_range(0.0f, 0.0f, Scheme::per_tensor(8));
  CHECK(p.scale == eps);
  CHECK(p.zero_point == 0);
  p = lowbit::params_from_range(0.0f, 0.0f, Scheme::per_tensor(8, false));
  CHECK(p.scale == eps);
  CHECK(p.zero_point == 0);
}

TEST_CASE("gamma multiplies the range before anything else") {
  const auto full = lowbit::params_from_range(-1.0f, 2.0f, Scheme::per_tensor(8));
  const auto half = lowbit::params_from_range(-1.0f, 2.0f, Scheme::per_tensor(8), 0.5f);
  CHECK(half.scale == 1.0f / 127.5f);
  CHECK(half.scale == Approx(full.scale / 2));
  const auto asym = lowbit::params_from_range(-2.0f, 4.0f, Scheme::per_tensor(8, false), 0.5f);
  const auto same = lowbit::params_from_range(-1.0f, 2.0f, Scheme::per_tensor(8, false));
  CHECK(asym.scale == same.scale);
  CHECK(asym.zero_point == same.zero_point);
}

TEST_CASE("choose_params per channel and per group, with a short last group") {
  lowbit::MatrixXfR x(2, 5);
  x << -1.0f, 2.0f, 0.5f, -4.0f, 3.0f,  //
      0.1f, 0.2f, -0.3f, 0.4f, -6.0f;
  const auto pc = lowbit::choose_params(x, Scheme::per_channel(8));
  REQUIRE(pc.scale.size() == 2);
  CHECK(pc.scale[0] == 4.0f / 127.5f);
  CHECK(pc.scale[1] == 6.0f / 127.5f);

  // Groups of 2: row 0 -> {-1, 2}, {0.5, -4}, {3}; row 1 -> {0.1, 0.2}, {-0.3, 0.4}, {-6}.
  const auto pg = lowbit::choose_params(x, Scheme::per_group(4, 2, false));
  REQUIRE(pg.scale.size() == 6);
  CHECK(pg.scale[0] == 3.0f / 15.0f);
  CHECK(pg.zero_point[0] == 5);  // -1 / 0.2 = -5
  CHECK(pg.scale[1] == 4.5f / 15.0f);
  CHECK(pg.zero_point[1] == 13);  // -4 / 0.3 = -13.33 -> 13
  CHECK(pg.scale[2] == 3.0f / 15.0f);
  CHECK(pg.zero_point[2] == 0);
  CHECK(pg.scale[3] == Approx(0.2f / 15.0f));
  CHECK(pg.zero_point[3] == 0);
  CHECK(pg.scale[4] == Approx(0.7f / 15.0f));
  CHECK(pg.zero_point[4] == 6);  // -0.3 / (0.7/15) = -6.43 -> 6
  CHECK(pg.scale[5] == 6.0f / 15.0f);
  CHECK(pg.zero_point[5] == 15);

  const auto pt = lowbit::choose_params(x, Scheme::per_tensor(8));
  CHECK(pt.scale == std::vector<float>{6.0f / 127.5f});

  // Per-block gammas clip each block by its own factor.
  const auto pgam = lowbit::choose_params(x, Scheme::per_channel(8), std::vector<float>{0.5f, 1.0f});
  CHECK(pgam.scale[0] == 2.0f / 127.5f);
  CHECK(pgam.scale[1] == pc.scale[1]);
}

TEST_CASE("bad ranges, gammas and matrices are rejected") {
  const Scheme s = Scheme::per_tensor(8);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(lowbit::params_from_range(nan, 1.0f, s), Catch::Contains("finite"));
  CHECK_THROWS_AS(lowbit::params_from_range(0.0f, inf, s), lowbit::Error);
  CHECK_THROWS_WITH(lowbit::params_from_range(2.0f, 1.0f, s), Catch::Contains("min <= max"));
  CHECK_THROWS_WITH(lowbit::params_from_range(-1.0f, 1.0f, s, 0.0f), Catch::Contains("gamma"));
  CHECK_THROWS_AS(lowbit::params_from_range(-1.0f, 1.0f, s, -0.5f), lowbit::Error);
  CHECK_THROWS_AS(lowbit::params_from_range(-1.0f, 1.0f, s, nan), lowbit::Error);
  CHECK_THROWS_AS(lowbit::params_from_range(-1.0f, 1.0f, Scheme::per_tensor(1)), lowbit::Error);

  CHECK_THROWS_AS(lowbit::params_from_ranges({}, {}, s), lowbit::Error);
  CHECK_THROWS_WITH(lowbit::params_from_ranges({0.0f, 1.0f}, {1.0f}, s), Catch::Contains("maxs"));
  CHECK_THROWS_WITH(lowbit::params_from_ranges({0.0f}, {1.0f}, s, {1.0f, 1.0f, 1.0f}),
                    Catch::Contains("gammas"));

  lowbit::MatrixXfR x = lowbit::MatrixXfR::Ones(2, 3);
  CHECK_THROWS_WITH(lowbit::choose_params(lowbit::MatrixXfR(0, 3), s), Catch::Contains("non-empty"));
  x(1, 2) = nan;
  CHECK_THROWS_WITH(lowbit::choose_params(x, s), Catch::Contains("x(1, 2)"));
  x(1, 2) = -inf;
  CHECK_THROWS_AS(lowbit::choose_params(x, s), lowbit::Error);
  x(1, 2) = 0.0f;
  CHECK_THROWS_WITH(lowbit::choose_params(x, Scheme::per_channel(8), std::vector<float>{1.0f}),
                    Catch::Contains("gammas"));
  CHECK_THROWS_AS(lowbit::choose_params(x, Scheme::per_group(4, 0)), lowbit::Error);
}

TEST_CASE("validate(params) checks lengths, scales and zero points") {
  const Scheme s = Scheme::per_channel(4, false);
  lowbit::QuantParams p{s, {0.1f, 0.2f}, {0, 15}};
  CHECK_NOTHROW(validate(p, 2, 5));
  CHECK_THROWS_WITH(validate(p, 3, 5), Catch::Contains("params.scale"));
  p.zero_point = {0};
  CHECK_THROWS_WITH(validate(p, 2, 5), Catch::Contains("params.zero_point"));
  p.zero_point = {0, 16};
  CHECK_THROWS_WITH(validate(p, 2, 5), Catch::Contains("0..15"));
  p.zero_point = {0, 1};
  p.scale = {0.0f, 1.0f};
  CHECK_THROWS_WITH(validate(p, 2, 5), Catch::Contains("> 0"));
  p.scale = {std::numeric_limits<float>::infinity(), 1.0f};
  CHECK_THROWS_AS(validate(p, 2, 5), lowbit::Error);
  lowbit::QuantParams sym{Scheme::per_tensor(8), {1.0f}, {3}};
  CHECK_THROWS_WITH(validate(sym, 2, 2), Catch::Contains("symmetric"));
}
