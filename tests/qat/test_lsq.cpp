// test_lsq.cpp: LSQ / LSQ+ gradients against finite differences, closed forms and consistency.
#include <lowbit/core/quantize.hpp>
#include <lowbit/qat/fake_quantize.hpp>
#include <lowbit/qat/lsq.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

using lowbit::Index;
using lowbit::MatrixXfR;
using lowbit::QuantParams;
using lowbit::Scheme;
namespace qat = lowbit::qat;

namespace {

MatrixXfR random_matrix(Index rows, Index cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  MatrixXfR x(rows, cols);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = n(rng);
  return x;
}

// Random per-block params, and x whose every element sits at x / s = k + u with an integer k
// from a few codes below qmin to a few above qmax and |u| <= 0.35: away from rounding
// discontinuities, with both clamped sides well populated.
void make_problem(const Scheme& s, Index rows, Index cols, unsigned seed, QuantParams& p,
                  MatrixXfR& x, bool avoid_edges = false) {
  std::mt19937 rng(seed);
  const auto n = static_cast<size_t>(lowbit::param_count(s, rows, cols));
  std::uniform_real_distribution<float> scale(0.05f, 0.3f), u(-0.35f, 0.35f);
  std::uniform_int_distribution<int> zp(s.qmin() + 1, s.qmax() - 1);
  p = QuantParams{s, std::vector<float>(n), std::vector<int32_t>(n)};
  for (size_t i = 0; i < n; ++i) {
    p.scale[i] = scale(rng);
    p.zero_point[i] = s.symmetric ? 0 : zp(rng);
  }
  x.resize(rows, cols);
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) {
      const auto a = p.at(lowbit::param_index(s, cols, r, c));
      std::uniform_int_distribution<int> k(s.qmin() - a.zero_point - 3, s.qmax() - a.zero_point + 3);
      int code = k(rng);
      // A code exactly at qmin/qmax is a kink in the zero point (tested in closed form).
      while (avoid_edges && (code + a.zero_point == s.qmin() || code + a.zero_point == s.qmax()))
        code = k(rng);
      x(r, c) = (float(code) + u(rng)) * a.scale;
    }
}

// The fake-quant output in double with a continuous zero point (the function LSQ+ differentiates).
double fq(double x, double s, double z, int qmin, int qmax) {
  const double q = std::clamp(std::nearbyint(x / s) + z, double(qmin), double(qmax));
  return (q - z) * s;
}

// d/ds and d/dz of sum(gy * fq) for block `b` by central differences of the real output. Inside
// the range d fq/ds is the rounded code (q - z); LSQ's straight-through rounding adds
// d(x/s)/ds * s = -x/s there, which `ste_term` returns for the same block.
void finite_differences(const MatrixXfR& gy, const MatrixXfR& x, const QuantParams& p, Index b,
                        double& d_scale, double& d_zero, double& ste_term) {
  const Scheme& s = p.scheme;
  d_scale = d_zero = ste_term = 0.0;
  lowbit::detail::for_each_block(s, x.rows(), x.cols(), [&](Index i, Index r, Index c0, Index c1) {
    if (i != b) return;
    const double sc = p.scale[size_t(b)], z = p.zero_point[size_t(b)];
    const double hs = 1e-4 * sc, hz = 1e-3;
    for (Index c = c0; c < c1; ++c) {
      const double xv = x(r, c), g = gy(r, c);
      d_scale += g * (fq(xv, sc + hs, z, s.qmin(), s.qmax()) - fq(xv, sc - hs, z, s.qmin(), s.qmax())) / (2 * hs);
      d_zero += g * (fq(xv, sc, z + hz, s.qmin(), s.qmax()) - fq(xv, sc, z - hz, s.qmin(), s.qmax())) / (2 * hz);
      const double q = std::nearbyint(xv / sc) + z;
      if (q >= s.qmin() && q <= s.qmax()) ste_term += g * (-xv / sc);
    }
  });
}

std::vector<Scheme> lsq_schemes() {
  std::vector<Scheme> out;
  for (bool sym : {true, false})
    for (int bits : {2, 4, 8}) {
      out.push_back(Scheme::per_tensor(bits, sym));
      out.push_back(Scheme::per_channel(bits, sym));
      out.push_back(Scheme::per_group(bits, 32, sym));
    }
  return out;
}

}  // namespace

TEST_CASE("LSQ scale and zero-point gradients match central finite differences") {
  for (const Scheme& s : lsq_schemes()) {
    // Rows of 70: two full groups of 32 and a partial group of 6.
    const Index rows = 3, cols = 70;
    QuantParams p;
    MatrixXfR x;
    make_problem(s, rows, cols, 11u + unsigned(s.bits), p, x, true);
    const MatrixXfR gy = random_matrix(rows, cols, 12);
    const float factor = 0.37f;
    const qat::LsqGrads g = qat::lsq_backward(gy, x, p, factor);
    REQUIRE(g.grad_scale.size() == p.scale.size());
    REQUIRE(g.grad_zero_point.size() == p.scale.size());
    for (Index b = 0; b < Index(p.scale.size()); ++b) {
      double d_scale, d_zero, ste_term;
      finite_differences(gy, x, p, b, d_scale, d_zero, ste_term);
      INFO("bits " << s.bits << " sym " << s.symmetric << " gran "
                   << lowbit::to_string(s.granularity) << " block " << b);
      CHECK(g.grad_scale[size_t(b)] == Approx(factor * (d_scale + ste_term)).margin(1e-4).epsilon(1e-4));
      CHECK(g.grad_zero_point[size_t(b)] == Approx(factor * d_zero).margin(1e-4).epsilon(1e-4));
    }
    // grad_x is the STE gradient.
    REQUIRE(g.grad_x == qat::fake_quantize_backward(gy, x, p));
  }
}

TEST_CASE("LSQ gradients at and just beyond the clamp boundaries have the closed form") {
  // 3-bit asymmetric: codes [0, 7], scale 0.25, zero point 2: x in [-0.5, 1.25] is inside.
  const QuantParams p{Scheme::per_tensor(3, false), {0.25f}, {2}};
  struct Case {
    float x;
    bool inside;
    float d_scale;  // per unit grad_y
    float d_zero;
  };
  const Case cases[] = {
      {-0.5f, true, 0.0f, 0.0f},                    // -2 -> q = 0 = qmin exactly: inside
      {-0.6f, true, (-0.5f + 0.6f) / 0.25f, 0.0f},  // -2.4 -> -2: q = qmin, inside
      {-0.625f, true, (-0.5f + 0.625f) / 0.25f, 0.0f},  // tie -2.5 -> -2 (even): inside
      {-0.875f, false, 0.0f - 2.0f, -0.25f},        // tie -3.5 -> -4: q = -2 < qmin
      {-0.7f, false, 0.0f - 2.0f, -0.25f},          // -2.8 -> -3: q = -1: (qmin - z), -s
      {1.25f, true, 0.0f, 0.0f},                    // 5 -> q = 7 = qmax exactly
      {1.3f, true, (1.25f - 1.3f) / 0.25f, 0.0f},   // 5.2 -> 5: q = qmax, inside
      {1.375f, false, 7.0f - 2.0f, -0.25f},         // tie 5.5 -> 6: q = 8 > qmax
      {1.4f, false, 7.0f - 2.0f, -0.25f},           // 5.6 -> 6: (qmax - z), -s
      {50.0f, false, 7.0f - 2.0f, -0.25f},
  };
  const Index n = Index(sizeof(cases) / sizeof(cases[0]));
  MatrixXfR x(1, n), gy(1, n);
  for (Index c = 0; c < n; ++c) {
    x(0, c) = cases[c].x;
    gy(0, c) = 1.0f;
    const MatrixXfR xc = x.block(0, c, 1, 1);
    const qat::LsqGrads g = qat::lsq_backward(MatrixXfR::Constant(1, 1, 1.5f), xc, p);
    const Case& k = cases[c];
    INFO("x = " << k.x);
    CHECK(g.grad_x(0, 0) == (k.inside ? 1.5f : 0.0f));
    CHECK(g.grad_scale[0] == Approx(1.5f * k.d_scale).margin(1e-6));
    CHECK(g.grad_zero_point[0] == Approx(1.5f * k.d_zero).margin(1e-7));
  }
  // Summed over the block, with the grad factor.
  const qat::LsqGrads all = qat::lsq_backward(gy, x, p, 0.5f);
  double expect_s = 0.0, expect_z = 0.0;
  for (Index c = 0; c < n; ++c) {
    expect_s += cases[c].d_scale;
    expect_z += cases[c].d_zero;
  }
  CHECK(all.grad_scale[0] == Approx(0.5 * expect_s).margin(1e-6));
  CHECK(all.grad_zero_point[0] == Approx(0.5 * expect_z).margin(1e-7));
}

TEST_CASE("LSQ per channel and per group equal the per-tensor op row by row, group by group") {
  const Index rows = 4, cols = 172;  // partial last group of 12
  for (bool sym : {true, false})
    for (const Scheme& s : {Scheme::per_channel(4, sym), Scheme::per_group(2, 32, sym)}) {
      QuantParams p;
      MatrixXfR x;
      make_problem(s, rows, cols, 21, p, x);
      const MatrixXfR gy = random_matrix(rows, cols, 22);
      const qat::LsqGrads g = qat::lsq_backward(gy, x, p, 0.25f);
      lowbit::detail::for_each_block(s, rows, cols, [&](Index i, Index r, Index c0, Index c1) {
        const QuantParams pt{Scheme::per_tensor(s.bits, sym), {p.scale[size_t(i)]},
                             {p.zero_point[size_t(i)]}};
        const MatrixXfR xb = x.block(r, c0, 1, c1 - c0);
        const MatrixXfR gb = gy.block(r, c0, 1, c1 - c0);
        const qat::LsqGrads t = qat::lsq_backward(gb, xb, pt, 0.25f);
        REQUIRE(t.grad_x == g.grad_x.block(r, c0, 1, c1 - c0));
        REQUIRE(t.grad_scale[0] == g.grad_scale[size_t(i)]);
        REQUIRE(t.grad_zero_point[0] == g.grad_zero_point[size_t(i)]);
      });
    }
}

TEST_CASE("lsq_grad_factor is 1 / sqrt(numel * qmax)") {
  CHECK(qat::lsq_grad_factor(Scheme::per_tensor(4, true), 700) == Approx(1.0 / std::sqrt(700.0 * 7)));
  CHECK(qat::lsq_grad_factor(Scheme::per_group(4, 32, false), 100) == Approx(1.0 / std::sqrt(1500.0)));
  CHECK(qat::lsq_grad_factor(Scheme::per_channel(2, true), 9) == Approx(1.0 / 3.0));
  REQUIRE_THROWS_AS(qat::lsq_grad_factor(Scheme::per_tensor(4), 0), lowbit::Error);
  REQUIRE_THROWS_AS(qat::lsq_grad_factor(Scheme::per_tensor(1), 10), lowbit::Error);
}

TEST_CASE("lsq_backward rejects bad input before writing its output") {
  QuantParams p;
  MatrixXfR x;
  make_problem(Scheme::per_group(4, 16, false), 2, 40, 31, p, x);
  const MatrixXfR gy = random_matrix(2, 40, 32);
  qat::LsqGrads out = qat::lsq_backward(gy, x, p);
  const qat::LsqGrads before = out;
  const auto unchanged = [&] {
    return out.grad_x == before.grad_x && out.grad_scale == before.grad_scale &&
           out.grad_zero_point == before.grad_zero_point;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();

  REQUIRE_THROWS_WITH(qat::lsq_backward_into(MatrixXfR::Ones(2, 41), x, p, 1.0f, out),
                      Catch::Contains("grad_y"));
  MatrixXfR bad_g = gy;
  bad_g(1, 3) = nan;
  REQUIRE_THROWS_WITH(qat::lsq_backward_into(bad_g, x, p, 1.0f, out), Catch::Contains("grad_y(1, 3)"));
  MatrixXfR bad_x = x;
  bad_x(0, 0) = -std::numeric_limits<float>::infinity();
  REQUIRE_THROWS_WITH(qat::lsq_backward_into(gy, bad_x, p, 1.0f, out), Catch::Contains("x(0, 0)"));
  for (float f : {0.0f, -1.0f, nan}) {
    REQUIRE_THROWS_WITH(qat::lsq_backward_into(gy, x, p, f, out), Catch::Contains("grad_factor"));
  }
  QuantParams bad_p = p;
  bad_p.scale[3] = 0.0f;
  REQUIRE_THROWS_WITH(qat::lsq_backward_into(gy, x, bad_p, 1.0f, out), Catch::Contains("scale[3]"));
  bad_p = p;
  bad_p.scale[1] = -0.5f;
  REQUIRE_THROWS_AS(qat::lsq_backward(gy, x, bad_p), lowbit::Error);
  bad_p = p;
  bad_p.zero_point[0] = 16;  // outside [0, 15]
  REQUIRE_THROWS_AS(qat::lsq_backward(gy, x, bad_p), lowbit::Error);
  bad_p = p;
  bad_p.scale.push_back(1.0f);
  bad_p.zero_point.push_back(0);
  REQUIRE_THROWS_AS(qat::lsq_backward(gy, x, bad_p), lowbit::Error);
  REQUIRE(unchanged());
}
