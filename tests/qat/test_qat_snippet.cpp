// test_qat_snippet.cpp: the QAT workflow snippet of docs/qat.md, compiled and checked.
#include <lowbit/lowbit.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <random>

TEST_CASE("docs/qat.md snippet: observe, freeze, learn, export") {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0.0f, 1.0f);
  lowbit::MatrixXfR W(48, 172), X(256, 172);  // a weight [out, in] (partial last group of 12)
  for (lowbit::Index i = 0; i < W.size(); ++i) W.data()[i] = 0.05f * n(rng);
  for (lowbit::Index i = 0; i < X.size(); ++i) X.data()[i] = n(rng);
  const lowbit::MatrixXfR Y = X * W.transpose();  // the FP32 layer's outputs
  const lowbit::MatrixXfR W0 = W;

  // --- snippet begins ---
  using namespace lowbit;
  qat::FakeQuant wq(Scheme::per_group(4, 32));  // 4-bit symmetric weights, groups of 32
  wq.enable_static_estimate();                  // 1. observe: params follow the weight
  MatrixXfR W_hat = wq.forward(W);
  wq.freeze();                                  // 2. freeze them, or start from a PTQ search:
  wq.set_params(ptq::search_gamma(W, wq.scheme(), X).params);
  const QuantParams searched = wq.params();     //    (the PTQ starting point)
  wq.enable_param_learning();                   // 3. learn weights (STE) and scales (LSQ)
  for (int step = 0; step < 100; ++step) {
    W_hat = wq.forward(W);
    const MatrixXfR err = X * W_hat.transpose() - Y;  // your loss: 0.5 mean |err|^2
    const MatrixXfR grad_W_hat = err.transpose() * X / float(X.rows());
    wq.zero_grad();
    W -= 0.01f * wq.backward(grad_W_hat);              // your optimiser
    for (size_t i = 0; i < wq.scale().size(); ++i) wq.scale()[i] -= 1e-2f * wq.grad_scale()[i];
  }
  const QuantParams p = wq.params();              // export for inference
  const auto packed = quantize_weights<4>(W, p);  // what inference runs
  // --- snippet ends ---

  REQUIRE(packed.dequantize() == qat::fake_quantize(W, p));
  REQUIRE(wq.forward(W) == packed.dequantize());
  REQUIRE(p.scale != searched.scale);  // the scales were learned
  // The loss is finite and of the PTQ start's order (a pure reconstruction loss is where STE
  // oscillates; examples/qat_mlp.cpp shows the gain on a real training task).
  const double end = mse(Y, X * packed.dequantize().transpose());
  const double ptq = mse(Y, X * qat::fake_quantize(W0, searched).transpose());
  REQUIRE(std::isfinite(end));
  REQUIRE(end < 3.0 * ptq);
}
