// test_minmax_observer.cpp: MinMax and MovingAverage observers against numbers derived by hand
// from PyTorch's formulas (per tensor, per channel on rows and columns, both signednesses).
#include <lowbit/calib/minmax_observer.hpp>
#include <lowbit/calib/moving_average_observer.hpp>
#include <lowbit/core/quantize.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

using lowbit::Error;
using lowbit::MatrixXfR;
using lowbit::Scheme;
using lowbit::calib::Axis;
using lowbit::calib::MinMaxObserver;
using lowbit::calib::MovingAverageMinMaxObserver;

namespace {

MatrixXfR mat(int rows, int cols, std::initializer_list<float> v) {
  MatrixXfR m(rows, cols);
  auto it = v.begin();
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) m(r, c) = *it++;
  return m;
}

// Two batches of width 3: [-1, 3] then [-4, 1] per tensor.
const MatrixXfR b1 = mat(2, 3, {-1, 2, 0.5f, 0.25f, 3, -0.5f});
const MatrixXfR b2 = mat(1, 3, {-4, 1, 0});
// Two observations of a 2x3 weight: rows [-1, 2] / [-0.5, 3], then [-4, 1] / [1, 5].
const MatrixXfR w1 = b1;
const MatrixXfR w2 = mat(2, 3, {-4, 1, 0, 1, 5, 2});

}  // namespace

TEST_CASE("MinMaxObserver per tensor matches PyTorch's MinMaxObserver") {
  MinMaxObserver asym(Scheme::per_tensor(8, false));
  MinMaxObserver sym(Scheme::per_tensor(8, true));
  for (auto* o : {&asym, &sym}) {
    REQUIRE_FALSE(o->has_observations());
    o->observe(b1);
    o->observe(b2);
    REQUIRE(o->has_observations());
    REQUIRE(o->batches() == 2);
    REQUIRE(o->min_vals() == std::vector<float>{-4.0f});
    REQUIRE(o->max_vals() == std::vector<float>{3.0f});
  }
  // quint8 affine: scale = (3 - -4) / 255; zero_point = 0 - round(-4 / scale) = round(145.71).
  auto p = asym.params();
  REQUIRE(p.scale[0] == Approx(7.0 / 255.0).epsilon(1e-6));
  REQUIRE(p.zero_point[0] == 146);
  // qint8 symmetric: scale = max(4, 3) / ((127 - -128) / 2) = 4 / 127.5, zero_point 0.
  p = sym.params();
  REQUIRE(p.scale[0] == Approx(4.0 / 127.5).epsilon(1e-6));
  REQUIRE(p.zero_point[0] == 0);
  // gamma scales the range first: 0.5 * [-4, 3] -> scale 3.5 / 255, zp round(2 / scale) = 146.
  p = asym.params(0.5f);
  REQUIRE(p.scale[0] == Approx(3.5 / 255.0).epsilon(1e-6));
  REQUIRE(p.zero_point[0] == 146);
  // Per tensor, the number of rows may change between batches; a single batch equals core.
  MinMaxObserver one(Scheme::per_tensor(4, false));
  one.observe(b1);
  const auto core = lowbit::choose_params(b1, Scheme::per_tensor(4, false));
  REQUIRE(one.params().scale == core.scale);
  REQUIRE(one.params().zero_point == core.zero_point);
}

TEST_CASE("MinMaxObserver per channel (rows) matches PerChannelMinMaxObserver(ch_axis=0)") {
  MinMaxObserver asym(Scheme::per_channel(8, false));
  MinMaxObserver sym(Scheme::per_channel(8, true));
  for (auto* o : {&asym, &sym}) {
    o->observe(w1);
    o->observe(w2);
    REQUIRE(o->blocks() == 2);
    REQUIRE(o->min_vals() == std::vector<float>{-4.0f, -0.5f});
    REQUIRE(o->max_vals() == std::vector<float>{2.0f, 5.0f});
  }
  // Row 0 [-4, 2]: scale 6/255, zp = round(4 / (6/255)) = 170. Row 1 [-0.5, 5]: scale 5.5/255,
  // zp = round(0.5 * 255 / 5.5) = round(23.18) = 23.
  auto p = asym.params();
  REQUIRE(p.scale[0] == Approx(6.0 / 255.0).epsilon(1e-6));
  REQUIRE(p.zero_point[0] == 170);
  REQUIRE(p.scale[1] == Approx(5.5 / 255.0).epsilon(1e-6));
  REQUIRE(p.zero_point[1] == 23);
  p = sym.params();
  REQUIRE(p.scale[0] == Approx(4.0 / 127.5).epsilon(1e-6));
  REQUIRE(p.scale[1] == Approx(5.0 / 127.5).epsilon(1e-6));
  REQUIRE(p.zero_point == std::vector<int32_t>{0, 0});
  // Per-block gammas.
  p = sym.params(std::vector<float>{0.5f, 1.0f});
  REQUIRE(p.scale[0] == Approx(2.0 / 127.5).epsilon(1e-6));
  REQUIRE(p.scale[1] == Approx(5.0 / 127.5).epsilon(1e-6));
}

TEST_CASE("MinMaxObserver per group splits rows as core does") {
  MinMaxObserver o(Scheme::per_group(4, 2, true));
  o.observe(w1);
  o.observe(w2);
  // Groups of 2 columns: row 0 -> [-4, 2] cols 0-1 and [0, 0.5] col 2; row 1 -> [0.25, 5], [-0.5, 2].
  REQUIRE(o.min_vals() == std::vector<float>{-4.0f, 0.0f, 0.25f, -0.5f});
  REQUIRE(o.max_vals() == std::vector<float>{2.0f, 0.5f, 5.0f, 2.0f});
  const auto p = o.params();
  // INT4 symmetric: scale = amax / ((7 - -8) / 2) = amax / 7.5.
  REQUIRE(p.scale[1] == Approx(0.5 / 7.5).epsilon(1e-6));
  REQUIRE(p.scale[3] == Approx(2.0 / 7.5).epsilon(1e-6));
}

TEST_CASE("MinMaxObserver per channel on columns (activations [tokens, features])") {
  // Features are columns: X1 gives col 0 [-1, 3], col 1 [-2, 1]; X2 gives [-5, 2], [0, 4].
  const MatrixXfR x1 = mat(3, 2, {1, -2, 3, 0.5f, -1, 1});
  const MatrixXfR x2 = mat(2, 2, {-5, 0, 2, 4});
  MinMaxObserver o(Scheme::per_channel(8, true), Axis::columns);
  o.observe(x1);
  o.observe(x2);  // the token count may change: only the feature count is fixed
  REQUIRE(o.min_vals() == std::vector<float>{-5.0f, -2.0f});
  REQUIRE(o.max_vals() == std::vector<float>{3.0f, 4.0f});
  const auto p = o.params();
  REQUIRE(p.scale[0] == Approx(5.0 / 127.5).epsilon(1e-6));
  REQUIRE(p.scale[1] == Approx(4.0 / 127.5).epsilon(1e-6));
  // The params describe the transposed batch [features, tokens].
  const MatrixXfR xt = x2.transpose();
  const auto q = lowbit::quantize(xt, p);
  REQUIRE(q(0, 0) == static_cast<int>(std::nearbyint(-5.0 / (5.0 / 127.5))));
  REQUIRE(q(1, 1) == 127);
  // Per tensor ignores the axis.
  MinMaxObserver t(Scheme::per_tensor(8, true), Axis::columns);
  t.observe(x1);
  t.observe(x2);
  REQUIRE(t.blocks() == 1);
  REQUIRE(t.params().scale[0] == Approx(5.0 / 127.5).epsilon(1e-6));
}

TEST_CASE("MovingAverageMinMaxObserver follows PyTorch's update rule") {
  SECTION("per tensor, default averaging constant 0.01") {
    MovingAverageMinMaxObserver asym(Scheme::per_tensor(8, false));
    MovingAverageMinMaxObserver sym(Scheme::per_tensor(8, true));
    REQUIRE(asym.averaging_constant() == 0.01f);
    for (auto* o : {&asym, &sym}) {
      o->observe(b1);
      // The first batch initialises (no averaging against the initial +-inf).
      REQUIRE(o->min_vals() == std::vector<float>{-1.0f});
      REQUIRE(o->max_vals() == std::vector<float>{3.0f});
      o->observe(b2);
      // min = -1 + 0.01 * (-4 - -1) = -1.03; max = 3 + 0.01 * (1 - 3) = 2.98.
      REQUIRE(o->min_vals()[0] == Approx(-1.03).epsilon(1e-6));
      REQUIRE(o->max_vals()[0] == Approx(2.98).epsilon(1e-6));
    }
    // scale = 4.01 / 255; zp = round(1.03 / scale) = round(65.499) = 65.
    auto p = asym.params();
    REQUIRE(p.scale[0] == Approx(4.01 / 255.0).epsilon(1e-6));
    REQUIRE(p.zero_point[0] == 65);
    p = sym.params();
    REQUIRE(p.scale[0] == Approx(2.98 / 127.5).epsilon(1e-6));
  }
  SECTION("per channel with averaging constant 0.5") {
    MovingAverageMinMaxObserver asym(Scheme::per_channel(8, false), 0.5f);
    MovingAverageMinMaxObserver sym(Scheme::per_channel(8, true), 0.5f);
    for (auto* o : {&asym, &sym}) {
      o->observe(w1);
      o->observe(w2);
      // Row 0: min = -1 + 0.5 * (-4 + 1) = -2.5, max = 2 + 0.5 * (1 - 2) = 1.5.
      // Row 1: min = -0.5 + 0.5 * (1 + 0.5) = 0.25, max = 3 + 0.5 * (5 - 3) = 4.
      REQUIRE(o->min_vals() == std::vector<float>{-2.5f, 0.25f});
      REQUIRE(o->max_vals() == std::vector<float>{1.5f, 4.0f});
    }
    auto p = asym.params();
    // Row 0: scale 4 / 255, zp = round(2.5 * 255 / 4) = round(159.375) = 159.
    // Row 1: the range is widened to include 0: [0, 4] -> scale 4 / 255, zp 0.
    REQUIRE(p.scale[0] == Approx(4.0 / 255.0).epsilon(1e-6));
    REQUIRE(p.zero_point[0] == 159);
    REQUIRE(p.scale[1] == Approx(4.0 / 255.0).epsilon(1e-6));
    REQUIRE(p.zero_point[1] == 0);
    p = sym.params();
    REQUIRE(p.scale[0] == Approx(2.5 / 127.5).epsilon(1e-6));
    REQUIRE(p.scale[1] == Approx(4.0 / 127.5).epsilon(1e-6));
  }
  SECTION("per channel on columns, constant 1 keeps the latest batch") {
    MovingAverageMinMaxObserver o(Scheme::per_channel(8, true), 1.0f, Axis::columns);
    o.observe(mat(3, 2, {1, -2, 3, 0.5f, -1, 1}));
    o.observe(mat(2, 2, {-5, 0, 2, 4}));
    REQUIRE(o.min_vals() == std::vector<float>{-5.0f, 0.0f});
    REQUIRE(o.max_vals() == std::vector<float>{2.0f, 4.0f});
  }
}

TEST_CASE("reset forgets every observation") {
  MovingAverageMinMaxObserver o(Scheme::per_channel(8, true), 0.5f);
  o.observe(w1);
  o.reset();
  REQUIRE_FALSE(o.has_observations());
  REQUIRE(o.blocks() == 0);
  REQUIRE_THROWS_AS(o.params(), Error);
  // After a reset the next batch initialises again, and its shape is free.
  o.observe(w2.topRows(1));
  REQUIRE(o.min_vals() == std::vector<float>{-4.0f});
  REQUIRE(o.max_vals() == std::vector<float>{1.0f});
}

TEST_CASE("MinMax observers reject bad input and leave their state untouched") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  // Construction.
  REQUIRE_THROWS_AS(MinMaxObserver(Scheme::per_tensor(9)), Error);
  REQUIRE_THROWS_AS(MinMaxObserver(Scheme::per_tensor(1)), Error);
  REQUIRE_THROWS_AS(MinMaxObserver(Scheme::per_group(4, 0)), Error);
  REQUIRE_THROWS_AS(MinMaxObserver(Scheme::per_group(4, 32), Axis::columns), Error);
  REQUIRE_THROWS_AS(MinMaxObserver(Scheme::per_tensor(8), static_cast<Axis>(7)), Error);
  for (float c : {0.0f, -0.1f, 1.5f, nan, inf})
    REQUIRE_THROWS_AS(MovingAverageMinMaxObserver(Scheme::per_tensor(8), c), Error);
  // Params before any observation.
  MinMaxObserver o(Scheme::per_channel(8, false));
  REQUIRE_THROWS_AS(o.params(), Error);
  REQUIRE_THROWS_AS(o.ranges(), Error);
  MovingAverageMinMaxObserver m(Scheme::per_tensor(8));
  REQUIRE_THROWS_AS(m.params(), Error);
  // Empty, NaN and Inf batches; the first good batch fixes the shape afterwards.
  REQUIRE_THROWS_AS(o.observe(MatrixXfR(0, 3)), Error);
  MatrixXfR bad = w1;
  bad(1, 2) = nan;
  REQUIRE_THROWS_AS(o.observe(bad), Error);
  bad(1, 2) = -inf;
  REQUIRE_THROWS_AS(o.observe(bad), Error);
  REQUIRE_FALSE(o.has_observations());
  o.observe(w1);
  REQUIRE_THROWS_AS(o.observe(bad), Error);
  REQUIRE_THROWS_AS(o.observe(MatrixXfR::Zero(2, 4)), Error);  // wrong width
  REQUIRE_THROWS_AS(o.observe(MatrixXfR::Zero(3, 3)), Error);  // wrong channel (row) count
  REQUIRE(o.batches() == 1);
  REQUIRE(o.min_vals() == std::vector<float>{-1.0f, -0.5f});
  // Per tensor: width fixed, rows free. Per channel on columns: width fixed, rows free.
  MinMaxObserver t(Scheme::per_tensor(8));
  t.observe(w1);
  REQUIRE_THROWS_AS(t.observe(MatrixXfR::Zero(2, 2)), Error);
  REQUIRE_NOTHROW(t.observe(MatrixXfR::Zero(5, 3)));
  MinMaxObserver col(Scheme::per_channel(8), Axis::columns);
  col.observe(w1);
  REQUIRE_THROWS_AS(col.observe(MatrixXfR::Zero(2, 2)), Error);
  REQUIRE_NOTHROW(col.observe(MatrixXfR::Zero(7, 3)));
  // Bad clipping factors.
  for (float g : {0.0f, -1.0f, nan, inf}) REQUIRE_THROWS_AS(o.params(g), Error);
  REQUIRE_THROWS_AS(o.params(std::vector<float>{1.0f, 1.0f, 1.0f}), Error);
  REQUIRE_THROWS_AS(o.params(std::vector<float>{}), Error);
}
