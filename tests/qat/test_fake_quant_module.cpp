// test_fake_quant_module.cpp: FakeQuant's observe -> freeze -> learn workflow and its exported params.
#include <lowbit/core/metrics.hpp>
#include <lowbit/core/quantize.hpp>
#include <lowbit/qat/fake_quant_module.hpp>
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

MatrixXfR random_matrix(Index rows, Index cols, unsigned seed, float sd = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(mean, sd);
  MatrixXfR x(rows, cols);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = n(rng);
  return x;
}

void require_same(const QuantParams& a, const QuantParams& b) {
  REQUIRE(a.scheme == b.scheme);
  REQUIRE(a.scale == b.scale);
  REQUIRE(a.zero_point == b.zero_point);
}

}  // namespace

TEST_CASE("FakeQuant: observe, freeze, learn; exported params reproduce forward") {
  const Scheme s = Scheme::per_tensor(8, false);
  qat::FakeQuant fq(s);
  REQUIRE(fq.observer_enabled());
  REQUIRE(fq.fake_quant_enabled());
  REQUIRE_FALSE(fq.learning_enabled());
  REQUIRE_FALSE(fq.has_params());

  // 1. Calibration: observe three activation batches, output = input.
  fq.enable_static_observation();
  const MatrixXfR b1 = random_matrix(16, 24, 1, 1.0f, 0.5f);
  const MatrixXfR b2 = random_matrix(16, 24, 2, 2.0f, 0.5f);
  const MatrixXfR b3 = random_matrix(16, 24, 3, 0.5f, 0.5f);
  for (const MatrixXfR* b : {&b1, &b2, &b3}) REQUIRE(fq.forward(*b) == *b);
  REQUIRE(fq.backward(b3) == b3);  // identity backward too
  REQUIRE(fq.observer().batches() == 3);
  MatrixXfR all(48, 24);
  all << b1, b2, b3;
  require_same(fq.params(), lowbit::choose_params(all, s));  // running min/max of the batches

  // 2. Freeze: the observer stops, forward is fake_quantize with the frozen params, STE backward.
  fq.freeze();
  REQUIRE_FALSE(fq.observer_enabled());
  const QuantParams frozen = fq.params();
  const MatrixXfR x = random_matrix(16, 24, 4, 3.0f);  // wider than observed: some clamping
  const MatrixXfR y = fq.forward(x);
  REQUIRE(y == qat::fake_quantize(x, frozen));
  REQUIRE(fq.observer().batches() == 3);
  require_same(fq.params(), frozen);
  const MatrixXfR gy = random_matrix(16, 24, 5);
  REQUIRE(fq.backward(gy) == qat::fake_quantize_backward(gy, x, frozen));
  REQUIRE(fq.grad_scale() == std::vector<float>{0.0f});

  // 3. Learn: LSQ gradients with LSQ's grad factor, accumulated until zero_grad().
  fq.enable_param_learning();
  REQUIRE(fq.learning_enabled());
  fq.forward(x);
  const qat::LsqGrads ref = qat::lsq_backward(gy, x, frozen, qat::lsq_grad_factor(s, x.size()));
  REQUIRE(fq.backward(gy) == ref.grad_x);
  REQUIRE(fq.grad_scale()[0] == ref.grad_scale[0]);
  REQUIRE(fq.grad_zero_point()[0] == ref.grad_zero_point[0]);
  REQUIRE(ref.grad_zero_point[0] != 0.0f);  // some elements are clamped
  fq.backward(gy);
  REQUIRE(fq.grad_scale()[0] == Approx(2.0f * ref.grad_scale[0]));
  fq.set_grad_factor(1.0f);
  fq.zero_grad();
  fq.backward(gy);
  REQUIRE(fq.grad_scale()[0] == Approx(qat::lsq_backward(gy, x, frozen).grad_scale[0]));

  // An optimiser step on the float parameters; the exported params reproduce forward exactly.
  fq.scale()[0] *= 1.3f;
  fq.zero_point()[0] += 2.6f;
  const MatrixXfR y2 = fq.forward(x);
  const QuantParams learned = fq.params();
  REQUIRE(learned.scale[0] == frozen.scale[0] * 1.3f);
  REQUIRE(learned.zero_point[0] == int32_t(std::nearbyint(float(frozen.zero_point[0]) + 2.6f)));
  REQUIRE(y2 == qat::fake_quantize(x, learned));
  REQUIRE(y2 == lowbit::dequantize(lowbit::quantize(x, learned), learned));
  REQUIRE(y2 != y);
}

TEST_CASE("FakeQuant on a per-group weight with a moving-average observer") {
  const Scheme s = Scheme::per_group(4, 32, true);
  const float c = 0.25f;
  qat::FakeQuant fq(s, qat::ObserverKind::moving_average, c);
  const MatrixXfR w1 = random_matrix(6, 172, 6, 0.1f);
  const MatrixXfR w2 = random_matrix(6, 172, 7, 0.3f);
  fq.enable_static_estimate();
  REQUIRE(fq.forward(w1) == qat::fake_quantize(w1, lowbit::choose_params(w1, s)));
  const MatrixXfR y2 = fq.forward(w2);
  // Ranges averaged as min += c * (batch_min - min), then core's rule.
  std::vector<float> mn1, mx1, mn2, mx2;
  lowbit::block_ranges(w1, s, mn1, mx1);
  lowbit::block_ranges(w2, s, mn2, mx2);
  for (size_t i = 0; i < mn1.size(); ++i) {
    mn1[i] = mn1[i] + c * (mn2[i] - mn1[i]);
    mx1[i] = mx1[i] + c * (mx2[i] - mx1[i]);
  }
  const QuantParams expected = lowbit::params_from_ranges(mn1, mx1, s);
  require_same(fq.params(), expected);
  REQUIRE(y2 == qat::fake_quantize(w2, expected));
  REQUIRE(fq.params().scale.size() == 6 * 6);
  // Symmetric: the zero point is never learned.
  fq.enable_param_learning();
  fq.forward(w2 * 3.0f);
  fq.backward(MatrixXfR::Ones(6, 172));
  for (float g : fq.grad_zero_point()) REQUIRE(g == 0.0f);
  REQUIRE(std::any_of(fq.grad_scale().begin(), fq.grad_scale().end(), [](float g) { return g != 0.0f; }));
  // A weight of another shape does not fit the per-group params.
  REQUIRE_THROWS_AS(fq.forward(random_matrix(5, 172, 8)), lowbit::Error);
}

TEST_CASE("FakeQuant export rounds and clamps learned values; set_params starts from PTQ") {
  const Scheme s = Scheme::per_channel(3, false);  // codes [0, 7]
  qat::FakeQuant fq(s);
  const MatrixXfR w = random_matrix(4, 20, 9);
  const QuantParams ptq = lowbit::choose_params(w, s, 0.8f);
  fq.set_params(ptq);
  require_same(fq.params(), ptq);
  fq.freeze();
  REQUIRE(fq.forward(w) == qat::fake_quantize(w, ptq));

  fq.zero_point() = {3.5f, 2.5f, -4.0f, 9.2f};  // ties to even, clamped to [0, 7]
  fq.scale()[1] = -1.0f;                        // floored at float epsilon
  const QuantParams p = fq.params();
  REQUIRE(p.zero_point == std::vector<int32_t>{4, 2, 0, 7});
  REQUIRE(p.scale[1] == std::numeric_limits<float>::epsilon());
  REQUIRE(fq.forward(w) == qat::fake_quantize(w, p));

  fq.scale()[2] = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_WITH(fq.params(), Catch::Contains("not finite"));
  REQUIRE_THROWS_AS(fq.forward(w), lowbit::Error);
}

TEST_CASE("FakeQuant: learning the scale by gradient descent lowers the quantization error") {
  // Minimise sum (fq(x) - x)^2 over the scale alone, from a scale 4x too large.
  const Scheme s = Scheme::per_tensor(4, true);
  const MatrixXfR x = random_matrix(32, 64, 10);
  qat::FakeQuant fq(s);
  QuantParams start = lowbit::choose_params(x, s);
  start.scale[0] *= 4.0f;
  fq.set_params(start);
  fq.enable_param_learning();
  fq.set_grad_factor(1.0f / float(x.size()));
  const double mse0 = lowbit::mse(x, fq.forward(x));
  const double mse_minmax = lowbit::mse(x, qat::fake_quantize(x, lowbit::choose_params(x, s)));
  for (int step = 0; step < 300; ++step) {
    const MatrixXfR y = fq.forward(x);
    fq.zero_grad();
    // d/dy of the loss is 2 (y - x); the identity path through x is not trained here.
    fq.backward(2.0f * (y - x));
    fq.scale()[0] -= 0.05f * fq.grad_scale()[0];
  }
  const double mse1 = lowbit::mse(x, fq.forward(x));
  INFO("mse before " << mse0 << " after " << mse1 << " min-max " << mse_minmax);
  REQUIRE(mse1 < 0.25 * mse0);
  REQUIRE(mse1 < mse_minmax);  // LSQ finds a clipping scale better than min-max
  REQUIRE(fq.params().scale[0] < start.scale[0]);
}

TEST_CASE("FakeQuant rejects bad input") {
  const Scheme s = Scheme::per_channel(4, true);
  qat::FakeQuant fq(s);
  REQUIRE_THROWS_WITH(fq.freeze(), Catch::Contains("no params"));
  REQUIRE_THROWS_WITH(fq.enable_param_learning(), Catch::Contains("no params"));
  REQUIRE_THROWS_WITH(fq.backward(MatrixXfR::Ones(2, 2)), Catch::Contains("before forward"));
  REQUIRE_THROWS_AS(fq.params(), lowbit::Error);
  REQUIRE_THROWS_AS(qat::FakeQuant(Scheme::per_tensor(9)), lowbit::Error);
  REQUIRE_THROWS_AS(qat::FakeQuant(s, qat::ObserverKind::moving_average, 0.0f), lowbit::Error);
  REQUIRE_THROWS_AS(qat::FakeQuant(s, static_cast<qat::ObserverKind>(7)), lowbit::Error);

  const MatrixXfR w = random_matrix(3, 10, 11);
  MatrixXfR bad = w;
  bad(2, 2) = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_WITH(fq.forward(bad), Catch::Contains("x(2, 2)"));
  REQUIRE_FALSE(fq.has_params());  // nothing observed from the bad batch
  fq.forward(w);
  REQUIRE_THROWS_WITH(fq.backward(MatrixXfR::Ones(3, 9)), Catch::Contains("grad_y"));
  MatrixXfR nan_grad = MatrixXfR::Ones(3, 10);
  nan_grad(0, 4) = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_WITH(fq.backward(nan_grad), Catch::Contains("grad_y(0, 4)"));
  fq.enable_param_learning();
  fq.forward(w);
  REQUIRE_THROWS_WITH(fq.backward(nan_grad), Catch::Contains("grad_y(0, 4)"));
  REQUIRE(fq.grad_scale() == std::vector<float>(3, 0.0f));

  QuantParams wrong = lowbit::choose_params(w, Scheme::per_channel(4, false));
  REQUIRE_THROWS_WITH(fq.set_params(wrong), Catch::Contains("scheme"));
  QuantParams neg = lowbit::choose_params(w, s);
  neg.scale[1] = -0.5f;
  REQUIRE_THROWS_WITH(fq.set_params(neg), Catch::Contains("scale[1]"));
  QuantParams ragged = lowbit::choose_params(w, s);
  ragged.zero_point.pop_back();
  REQUIRE_THROWS_AS(fq.set_params(ragged), lowbit::Error);
  REQUIRE_THROWS_WITH(fq.set_grad_factor(0.0f), Catch::Contains("grad_factor"));
  REQUIRE_THROWS_AS(fq.set_grad_factor(std::numeric_limits<float>::infinity()), lowbit::Error);
}
