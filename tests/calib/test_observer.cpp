// test_observer.cpp: what every observer shares: bounded memory, rejected input for each kind,
// use through the Observer interface, reset.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <lowbit/calib/entropy_observer.hpp>
#include <lowbit/calib/make_observer.hpp>
#include <lowbit/calib/minmax_observer.hpp>
#include <lowbit/calib/moving_average_observer.hpp>
#include <lowbit/calib/mse_observer.hpp>
#include <lowbit/calib/percentile_observer.hpp>
#include <lowbit/core/metrics.hpp>
#include <lowbit/core/quantize.hpp>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

using lowbit::Error;
using lowbit::MatrixXfR;
using lowbit::Scheme;
using lowbit::calib::Axis;
using lowbit::calib::Observer;

namespace {

std::vector<std::unique_ptr<Observer>> every_observer(const Scheme& s, Axis axis) {
  using namespace lowbit::calib;
  std::vector<std::unique_ptr<Observer>> v;
  v.push_back(std::make_unique<MinMaxObserver>(s, axis));
  v.push_back(std::make_unique<MovingAverageMinMaxObserver>(s, 0.1f, axis));
  v.push_back(std::make_unique<PercentileObserver>(s, 99.9, axis, 256));
  v.push_back(std::make_unique<MseObserver>(s, axis, 256));
  v.push_back(std::make_unique<EntropyObserver>(s, axis, 256));
  return v;
}

// The labels of every_observer()'s entries, in order.
const char* const labels[] = {"minmax", "moving_average", "percentile_99.9", "mse", "entropy"};

const Scheme schemes[] = {Scheme::per_tensor(8, true), Scheme::per_tensor(4, false),
                          Scheme::per_channel(8, false), Scheme::per_group(4, 3, true)};

}  // namespace

TEST_CASE("observer memory does not grow with the number of batches") {
  std::mt19937 rng(4);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (const Scheme& s : schemes)
    for (auto& o : every_observer(s, Axis::rows)) {
      MatrixXfR x(6, 10);
      for (int i = 0; i < x.size(); ++i) x.data()[i] = n(rng);
      o->observe(x);
      const auto first = o->memory_bytes();
      REQUIRE(first > 0);
      for (int b = 1; b <= 60; ++b) {
        for (int i = 0; i < x.size(); ++i)
          x.data()[i] = n(rng) * static_cast<float>(b);  // ranges grow
        o->observe(x);
      }
      REQUIRE(o->batches() == 61);
      REQUIRE(o->memory_bytes() == first);
      // Every observer yields valid parameters for the batch shape.
      const auto p = o->params();
      REQUIRE_NOTHROW(lowbit::validate(p, x.rows(), x.cols()));
    }
}

TEST_CASE("every observer rejects bad batches and early params, and keeps its state") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (const Scheme& s : schemes)
    for (const Axis axis : {Axis::rows, Axis::columns}) {
      if (axis == Axis::columns && s.granularity == lowbit::Granularity::per_group) continue;
      for (auto& o : every_observer(s, axis)) {
        REQUIRE_FALSE(o->has_observations());
        REQUIRE_THROWS_AS(o->params(), Error);
        REQUIRE_THROWS_AS(o->ranges(), Error);
        REQUIRE_THROWS_AS(o->observe(MatrixXfR(0, 4)), Error);
        REQUIRE_THROWS_AS(o->observe(MatrixXfR(4, 0)), Error);
        MatrixXfR x = MatrixXfR::Random(4, 6);
        for (float bad : {nan, inf, -inf}) {
          MatrixXfR y = x;
          y(3, 5) = bad;
          REQUIRE_THROWS_AS(o->observe(y), Error);
        }
        REQUIRE_FALSE(o->has_observations());
        o->observe(x);
        const auto before = o->ranges();
        MatrixXfR y = x * 10.0f;
        y(0, 0) = nan;
        REQUIRE_THROWS_AS(o->observe(y), Error);
        REQUIRE_THROWS_AS(o->observe(MatrixXfR::Ones(4, 5)), Error);  // width changed
        if (axis == Axis::rows && s.granularity != lowbit::Granularity::per_tensor)
          REQUIRE_THROWS_AS(o->observe(MatrixXfR::Ones(5, 6)), Error);  // channel count changed
        REQUIRE(o->batches() == 1);
        REQUIRE(o->ranges().min == before.min);
        REQUIRE(o->ranges().max == before.max);
        // Otherwise the number of rows (tokens) may change.
        if (axis == Axis::columns || s.granularity == lowbit::Granularity::per_tensor)
          REQUIRE_NOTHROW(o->observe(x.topRows(1).replicate(5, 1)));
        REQUIRE_THROWS_AS(o->params(0.0f), Error);
        REQUIRE_THROWS_AS(o->params(nan), Error);
        o->reset();
        REQUIRE_FALSE(o->has_observations());
        REQUIRE(o->memory_bytes() < 1024);
        REQUIRE_THROWS_AS(o->params(), Error);
        o->observe(MatrixXfR::Ones(2, 3));  // a fresh start accepts a new shape
        REQUIRE(o->has_observations());
      }
    }
}

TEST_CASE("MseObserver has the lowest actual error of all observers on heavy-tailed data") {
  std::mt19937 rng(6);
  std::student_t_distribution<float> t(3.0f);
  std::vector<MatrixXfR> batches;
  for (int b = 0; b < 4; ++b) {
    MatrixXfR x(64, 256);
    for (int i = 0; i < x.size(); ++i) x.data()[i] = t(rng);
    x(b, 3 * b) = 40.0f;  // one outlier per batch
    batches.push_back(x);
  }
  for (const Scheme& s : {Scheme::per_tensor(8, true), Scheme::per_tensor(8, false),
                          Scheme::per_tensor(4, true), Scheme::per_tensor(4, false)}) {
    auto observers = every_observer(s, Axis::rows);
    std::vector<double> err;
    for (auto& o : observers) {
      for (const auto& b : batches) o->observe(b);
      const auto p = o->params();
      double e = 0.0;
      for (const auto& b : batches)
        e += lowbit::mse(b, lowbit::dequantize(lowbit::quantize(b, p), p));
      err.push_back(e);
    }
    std::string row = "bits " + std::to_string(s.bits) + (s.symmetric ? " sym" : " asym") + ":";
    for (size_t i = 0; i < err.size(); ++i)
      row += std::string(" ") + labels[i] + " " + std::to_string(err[i] / err[0]);
    WARN("actual MSE relative to MinMax, " << row);
    for (size_t i = 0; i < err.size(); ++i) REQUIRE(err[3] <= err[i] * 1.001);
  }
}

TEST_CASE("constant and all-zero batches give valid parameters from every observer") {
  for (const Scheme& s : schemes)
    for (float value : {0.0f, 1.5f, -3.0f})
      for (auto [k, observers] = std::pair{size_t{0}, every_observer(s, Axis::rows)};
           k < observers.size(); ++k) {
        auto& o = observers[k];
        const MatrixXfR x = MatrixXfR::Constant(6, 9, value);
        o->observe(x);
        o->observe(x);
        const auto r = o->ranges();
        for (size_t i = 0; i < r.min.size(); ++i) {
          REQUIRE(r.min[i] <= r.max[i]);
          // No observer goes beyond the observed range widened to include 0 (which is what
          // the parameters represent); MSE's gamma may scale one-signed data towards 0.
          REQUIRE(r.min[i] >= std::min(value, 0.0f) * (1.0f + 1e-5f));
          REQUIRE(r.max[i] <= std::max(value, 0.0f) * (1.0f + 1e-5f));
        }
        const auto p = o->params();
        REQUIRE_NOTHROW(lowbit::validate(p, x.rows(), x.cols()));
        const MatrixXfR back = lowbit::dequantize(lowbit::quantize(x, p), p);
        INFO("bits " << s.bits << " sym " << s.symmetric << " value " << value << " observer "
                     << labels[k] << " range " << r.min[0] << " " << r.max[0]);
        // At most MinMax's error: half a step of |value| / ((qmax - qmin) / 2).
        const double half_step = std::abs(value) / (s.qmax() - s.qmin());
        REQUIRE(lowbit::max_abs_error(x, back) <= half_step * 1.001 + 1e-6);
      }
}

TEST_CASE("extreme magnitudes give valid parameters from every observer") {
  for (const Scheme& s : schemes)
    for (float scale : {1e37f, 1e-38f, 1e-42f}) {  // huge, tiny, subnormal
      MatrixXfR x = MatrixXfR::Random(6, 9) * scale;
      x(0, 0) = scale;
      for (auto [k, observers] = std::pair{size_t{0}, every_observer(s, Axis::rows)};
           k < observers.size(); ++k) {
        auto& o = observers[k];
        o->observe(x);
        o->observe(x * 0.5f);
        const auto r = o->ranges();
        for (size_t i = 0; i < r.min.size(); ++i) {
          REQUIRE(std::isfinite(r.min[i]));
          REQUIRE(std::isfinite(r.max[i]));
          REQUIRE(r.min[i] <= r.max[i]);
        }
        INFO("scale " << scale << " observer " << labels[k]);
        REQUIRE_NOTHROW(lowbit::validate(o->params(), x.rows(), x.cols()));
      }
    }
}

TEST_CASE("make_observer builds each kind by name and rejects unknown names") {
  const MatrixXfR x = MatrixXfR::Random(8, 5);
  for (const auto name : lowbit::calib::observer_names) {
    auto o = lowbit::calib::make_observer(name, Scheme::per_channel(8, false), Axis::columns);
    o->observe(x);
    REQUIRE(o->blocks() == 5);
    REQUIRE(o->scheme() == Scheme::per_channel(8, false));
    REQUIRE(o->axis() == Axis::columns);
  }
  REQUIRE(dynamic_cast<lowbit::calib::EntropyObserver*>(
              lowbit::calib::make_observer("entropy", Scheme::per_tensor(8)).get()) != nullptr);
  REQUIRE(dynamic_cast<lowbit::calib::MovingAverageMinMaxObserver*>(
              lowbit::calib::make_observer("moving_average", Scheme::per_tensor(8)).get()) !=
          nullptr);
  REQUIRE_THROWS_AS(lowbit::calib::make_observer("kl", Scheme::per_tensor(8)), Error);
  REQUIRE_THROWS_AS(lowbit::calib::make_observer("", Scheme::per_tensor(8)), Error);
  REQUIRE_THROWS_AS(lowbit::calib::make_observer("mse", Scheme::per_tensor(12)), Error);
}
