// test_calib_doc_example.cpp: the example of docs/calib.md, compiled and checked.
#include <catch2/catch.hpp>
#include <lowbit/lowbit.hpp>
#include <random>

TEST_CASE("docs/calib.md example") {
  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto next_batch = [&] {
    lowbit::MatrixXfR x(64, 128);  // [tokens, features]
    for (int i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
    return x;
  };
  // --- begin example
  using namespace lowbit;
  // Static INT8 activation ranges: one observer per layer input, fed with calibration batches.
  calib::EntropyObserver act(Scheme::per_tensor(8, /*symmetric=*/true));
  calib::MinMaxObserver per_feature(Scheme::per_channel(8, false), calib::Axis::columns);
  for (int step = 0; step < 8; ++step) {
    const MatrixXfR x = next_batch();
    act.observe(x);
    per_feature.observe(x);
  }
  const QuantParams p = act.params();  // one scale, zero point 0
  const MatrixXfR x = next_batch();
  const MatrixXiR codes = quantize(x, p);                 // core's numeric contract
  const QuantParams pf = per_feature.params();            // one pair per feature (column)
  const MatrixXiR codes_t = quantize(x.transpose(), pf);  // ... applied to x^T [features, tokens]
  // --- end example
  REQUIRE(p.scale.size() == 1);
  REQUIRE(codes.cols() == 128);
  REQUIRE(pf.scale.size() == 128);
  REQUIRE(codes_t.rows() == 128);
}
