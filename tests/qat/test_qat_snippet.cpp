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

TEST_CASE("docs/qat.md snippet: QAT on a GGUF format's grid, exported as its blocks") {
  // --- snippet begins (self-contained, as README snippets must be) ---
  using namespace lowbit;
  const MatrixXfR W0 = 0.05f * MatrixXfR::Random(64, 256);  // a weight [out, in]
  const MatrixXfR X = MatrixXfR::Random(512, 256);          // the layer's inputs
  const MatrixXfR Y = X * W0.transpose();                   // the FP32 layer's outputs

  MatrixXfR W = W0;  // the latent weights; start from Q4_K's plain rounding (or from a PTQ
                     // file's blocks: format_params_from_blocks)
  qat::FormatParams p = qat::format_params_from_weights(formats::Type::Q4_K, W);
  const float factor = qat::format_grad_factor(p);  // LSQ's 1 / sqrt(numel * qmax)
  for (int step = 0; step < 50; ++step) {
    const MatrixXfR W_hat = qat::format_fake_quantize(W, p);  // what Q4_K decodes, exactly
    const MatrixXfR err = X * W_hat.transpose() - Y;          // your loss: 0.5 mean |err|^2
    const MatrixXfR grad_W_hat = err.transpose() * X / float(X.rows());
    const qat::FormatGrads g = qat::format_lsq_backward(grad_W_hat, W, p, factor);
    W -= 0.01f * g.grad_x;                                    // your optimiser
    for (size_t i = 0; i < p.scale.size(); ++i) {             // sub-block scales and mins
      p.scale[i] -= 5e-4f * g.grad_scale[i];
      p.offset[i] -= 5e-4f * g.grad_offset[i];
    }
    for (size_t k = 0; k < p.super_scale.size(); ++k) {       // d and dmin
      p.super_scale[k] -= 1e-5f * g.grad_super_scale[k];
      p.super_min[k] -= 1e-5f * g.grad_super_min[k];
    }
    qat::project(p);                                           // keep them storable
  }
  const std::vector<uint8_t> q4k = qat::export_format_blocks(W, p);  // GGUF Q4_K rows
  // --- snippet ends ---

  const MatrixXfR decoded = formats::decode_matrix(formats::Type::Q4_K, q4k.data(), 64, 256);
  REQUIRE(decoded == qat::format_fake_quantize(W, p));
  REQUIRE(q4k.size() == 64 * 144);
  // The layer's output error went below the plain rounding's (about 6% here: on a pure
  // reconstruction loss STE oscillates; the gain is on a task loss, as the llama runs show).
  const qat::FormatParams p0 = qat::format_params_from_weights(formats::Type::Q4_K, W0);
  const double before = mse(Y, X * qat::format_fake_quantize(W0, p0).transpose());
  const double after = mse(Y, X * decoded.transpose());
  REQUIRE(after < before);
}
