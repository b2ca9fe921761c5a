// test_qat_snippet.cpp: the QAT workflow snippet of docs/qat.md, compiled and checked.
#include <lowbit/lowbit.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

TEST_CASE("docs/qat.md snippet: observe, freeze, learn, export") {
  // --- snippet begins (self-contained, as README snippets must be) ---
  using namespace lowbit;
  MatrixXfR W = 0.05f * MatrixXfR::Random(48, 172);  // a weight [out, in]; last group of a row: 12
  const MatrixXfR X = MatrixXfR::Random(256, 172);   // the layer's inputs
  const MatrixXfR Y = X * W.transpose();             // the FP32 layer's outputs

  qat::FakeQuant wq(Scheme::per_group(4, 32));  // 4-bit symmetric weights, groups of 32
  wq.enable_static_estimate();                  // 1. observe: params follow the weight
  MatrixXfR W_hat = wq.forward(W);
  wq.freeze();                                  // 2. freeze them, or start from a PTQ search:
  wq.set_params(ptq::search_gamma(W, wq.scheme(), X).params);
  wq.enable_param_learning();                   // 3. learn weights (STE) and scales (LSQ)
  for (int step = 0; step < 100; ++step) {
    W_hat = wq.forward(W);
    const MatrixXfR err = X * W_hat.transpose() - Y;  // your loss: 0.5 mean |err|^2
    const MatrixXfR grad_W_hat = err.transpose() * X / float(X.rows());
    wq.zero_grad();
    W -= 0.01f * wq.backward(grad_W_hat);             // your optimiser
    for (size_t i = 0; i < wq.scale().size(); ++i) wq.scale()[i] -= 1e-2f * wq.grad_scale()[i];
  }
  const QuantParams p = wq.params();              // export for inference
  const auto packed = quantize_weights<4>(W, p);  // what inference runs
  // --- snippet ends ---

  REQUIRE(packed.dequantize() == qat::fake_quantize(W, p));
  REQUIRE(wq.forward(W) == packed.dequantize());
  REQUIRE(p.scale.size() == 48 * 6);
  // LSQ produced scale gradients, and the loss stays finite and of the layer's error order (a
  // pure reconstruction loss is where STE oscillates; examples/qat_mlp.cpp shows the gain on a
  // real training task).
  REQUIRE(std::any_of(wq.grad_scale().begin(), wq.grad_scale().end(),
                      [](float g) { return g != 0.0f; }));
  const double end = mse(Y, X * packed.dequantize().transpose());
  REQUIRE(std::isfinite(end));
  REQUIRE(end < 0.1 * Y.squaredNorm() / double(Y.size()));
}
