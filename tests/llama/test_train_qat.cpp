// test_train_qat.cpp: whole-model QAT (effective weights are exactly what inference dequantizes,
// gradients routed through STE/LSQ, loss goes down) and the training forward on the real model
// against the engine's forward.
#include "../../examples/llama/engine.hpp"
#include "../../examples/llama_train/qat.hpp"
#include "tiny_llama.hpp"

#include <lowbit/core/quantize.hpp>

#include <catch2/catch.hpp>

#include <fstream>
#include <random>

using namespace llama::train;

namespace {

std::string model_path() { return std::string(LOWBIT_SHARED_DIR) + "/models/stories260K.gguf"; }
bool have_model() { return bool(std::ifstream(model_path())); }

Params<float> tiny_model(std::mt19937& rng) { return tiny::params<float>(true, rng); }

std::map<std::string, lowbit::QuantParams> minmax_params(Params<float>& p, int bits, int group) {
  std::map<std::string, lowbit::QuantParams> out;
  const auto scheme = lowbit::Scheme::per_group(bits, group);
  for (auto& [name, m] : linear_weights(p, false)) out[name] = lowbit::choose_params(*m, scheme);
  out["output"] = lowbit::choose_params(p.token_embd, scheme);
  return out;
}

}  // namespace

TEST_CASE("QAT: effective weights are exactly dequantize(quantize(latent)) before and after training") {
  std::mt19937 rng(11);
  Params<float> p = tiny_model(rng);
  const Params<float> teacher = p;
  QatModel model(p, minmax_params(p, 3, 8));
  std::vector<std::vector<int>> data;
  for (int s = 0; s < 6; ++s) {
    std::vector<int> seq(7);
    for (auto& t : seq) t = int(rng() % 32);
    data.push_back(seq);
  }
  QatOptions opt;
  opt.steps = 25;
  opt.batch_tokens = 12;
  opt.lr = 1e-2f;
  opt.loss = {1.0, 1.0};
  const auto log = model.train(data, &teacher, opt);
  REQUIRE(log.size() == 25);
  auto check_exact = [&] {
    auto& lat = const_cast<Params<float>&>(model.latent());
    auto& eff = const_cast<Params<float>&>(model.effective());
    for (auto& [name, m] : linear_weights(lat, false)) {
      const auto& qp = model.params().at(name);
      const Mat<float> deq = lowbit::dequantize(lowbit::quantize(*m, qp), qp);
      Mat<float>* e = nullptr;
      for (auto& [n2, m2] : linear_weights(eff, false))
        if (n2 == name) e = m2;
      REQUIRE(e != nullptr);
      REQUIRE((deq.array() == e->array()).all());  // bit for bit
    }
    const auto& qo = model.params().at("output");
    REQUIRE((lowbit::dequantize(lowbit::quantize(lat.token_embd, qo), qo).array() ==
             eff.output.array())
                .all());
    REQUIRE(eff.token_embd == eff.output);  // the tied lookup reads the same quantized table
    for (const auto& [name, qp] : model.params())
      for (float sc : qp.scale) {  // binary16 step sizes, as the packed kernels store them
        const uint16_t h = lowbit::float_to_half(sc);
        REQUIRE(lowbit::is_normal_half(h));
        REQUIRE(lowbit::half_to_float(h) == sc);
      }
  };
  check_exact();
  // Learned step sizes moved and stayed positive; latent weights moved.
  const auto init = minmax_params(p, 3, 8);
  bool moved = false;
  for (const auto& [name, qp] : model.params())
    for (size_t i = 0; i < qp.scale.size(); ++i) {
      REQUIRE(qp.scale[i] > 0.0f);
      moved = moved || qp.scale[i] != init.at(name).scale[i];
    }
  REQUIRE(moved);
  REQUIRE(model.latent().layers[1].w_down != p.layers[1].w_down);
}

TEST_CASE("QAT: fine-tuning lowers the training loss (STE and LSQ)") {
  for (bool lsq : {false, true}) {
    INFO("lsq " << lsq);
    std::mt19937 rng(12);
    Params<float> p = tiny_model(rng);
    QatModel model(p, minmax_params(p, 2, 16), /*half_scales=*/false);
    std::vector<std::vector<int>> data = {{1, 5, 9, 13, 17, 21, 25, 29}, {1, 2, 3, 4, 5, 6}};
    QatOptions opt;
    opt.steps = 60;
    opt.batch_tokens = 12;
    opt.lr = 2e-2f;
    opt.lsq = lsq;
    opt.loss = {1.0, 0.0};
    const auto log = model.train(data, nullptr, opt);
    REQUIRE(log.back().ce < 0.5 * log.front().ce);
    if (!lsq) REQUIRE(model.params().at("blk.0.attn_q").scale == minmax_params(p, 2, 16).at("blk.0.attn_q").scale);
  }
}

TEST_CASE("QAT: the latent gradient is the STE-masked effective gradient") {
  // One step of plain SGD-like Adam with lsq off: weights whose codes are clamped get no update.
  std::mt19937 rng(13);
  Params<float> p = tiny_model(rng);
  auto params = minmax_params(p, 4, 16);
  // Shrink one scale so most of that block clamps; those latent weights must not move.
  params["blk.0.attn_q"].scale[0] *= 0.05f;
  QatModel model(p, params);
  QatOptions opt;
  opt.steps = 1;
  opt.batch_tokens = 5;
  opt.lsq = false;
  opt.loss = {1.0, 0.0};
  model.train({{1, 7, 3, 9, 4, 2}}, nullptr, opt);
  const auto& qp = params["blk.0.attn_q"];
  const float s = qp.scale[0];
  int clamped = 0;
  for (Index c = 0; c < 16; ++c) {
    const float code = std::nearbyint(p.layers[0].wq(0, c) / s);
    if (code < qp.scheme.qmin() || code > qp.scheme.qmax()) {
      ++clamped;
      REQUIRE(model.latent().layers[0].wq(0, c) == p.layers[0].wq(0, c));
    }
  }
  REQUIRE(clamped > 0);
}

TEST_CASE("QAT: rejects bad input") {
  std::mt19937 rng(14);
  Params<float> p = tiny_model(rng);
  auto params = minmax_params(p, 4, 16);
  auto bad = params;
  bad["blk.9.attn_q"] = params["blk.0.attn_q"];
  REQUIRE_THROWS_AS(QatModel(p, bad), lowbit::Error);
  bad = params;
  bad["blk.0.attn_k"] = params["blk.0.attn_q"];  // wrong shape (16 rows instead of 8)
  REQUIRE_THROWS_AS(QatModel(p, bad), lowbit::Error);
  QatModel model(p, params);
  QatOptions opt;
  REQUIRE_THROWS_AS(model.train({}, nullptr, opt), lowbit::Error);
  REQUIRE_THROWS_AS(model.train({{1}}, &p, opt), lowbit::Error);
  REQUIRE_THROWS_AS(model.train({{1, 2, 3}}, nullptr, opt), lowbit::Error);  // kd needs a teacher
  opt.batch_tokens = 0;
  REQUIRE_THROWS_AS(model.train({{1, 2, 3}}, &p, opt), lowbit::Error);
}

TEST_CASE("training forward on stories260K matches the engine's forward") {
  if (!have_model()) {
    WARN("SKIPPED: " << model_path() << " is absent (needs ../shared beside the project)");
    return;
  }
  const llama::Weights w = llama::load_weights(model_path(), 512);
  const Params<float> p = from_weights<float>(w);
  REQUIRE(p.tied);
  const std::vector<int> tokens = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315};
  const Mat<float> mine = forward(p, tokens);
  llama::Model engine(w);
  const lowbit::MatrixXfR ref = engine.forward(tokens);
  REQUIRE(mine.rows() == ref.rows());
  REQUIRE(mine.cols() == ref.cols());
  const float diff = (mine - ref).cwiseAbs().maxCoeff();
  INFO("max |logit difference| " << diff);
  REQUIRE(diff < 1e-4f * (1.0f + ref.cwiseAbs().maxCoeff()));
  // Greedy continuation golden from the models README: after BOS the model predicts 403.
  Index arg;
  mine.row(0).maxCoeff(&arg);
  REQUIRE(arg == 403);
  // Double precision agrees too (the float forward is not far from exact).
  const Mat<double> exact = forward(from_weights<double>(w), tokens);
  REQUIRE((exact.cast<float>() - mine).cwiseAbs().maxCoeff() < 1e-3f);
  // Round trip back to the engine's weights.
  const llama::Weights back = to_weights(p);
  REQUIRE(back.output == w.output);
  REQUIRE(back.layers[4].w_up == w.layers[4].w_up);
}

#include "../../examples/llama_study/study.hpp"

TEST_CASE("study: what QAT trained is what the engine runs on lowbit's kernels") {
  if (!have_model()) {
    WARN("SKIPPED: " << model_path() << " is absent (needs ../shared beside the project)");
    return;
  }
  const llama::Weights w = llama::load_weights(model_path(), 512);
  const std::vector<std::vector<int>> seqs = {{1, 403, 407, 261, 378, 432, 383, 286, 261, 376},
                                              {1, 298, 315, 421, 395, 317, 426, 338}};
  std::map<std::string, lowbit::ptq::Calibration> calib;
  calib = study::capture_calibration(w, seqs, 1000);
  REQUIRE(calib.size() == 5 * 4 + 1);  // q/k/v and gate/up share inputs; plus the head
  const study::Plan init = study::uniform_plan(w, calib, lowbit::Scheme::per_group(3, 32), "rtn");
  // Bytes: every quantized tensor as QuantizedMatrix counts it, norms in float, the tied table once.
  size_t expect = 4 * size_t(64 + 5 * 128);
  for (const auto& [name, s] : init)
    expect += lowbit::QuantizedMatrix<3>(s.codes, s.params).bytes();
  REQUIRE(study::model_bytes(w, init) == expect);
  REQUIRE(study::model_bytes(w, {}) == 260032u * 4);
  QatOptions opt;
  opt.steps = 2;
  opt.batch_tokens = 8;
  llama::Weights trained;
  const study::Plan plan = study::run_qat(w, init, seqs, opt, trained);
  REQUIRE(plan.size() == init.size());
  // The engine on packed kernels vs the training forward of the trained fake-quantized model.
  llama::Model m = study::build_model(trained, plan);
  const auto& tokens = seqs[0];
  const lowbit::MatrixXfR engine_logits = m.forward(tokens);
  Params<float> eff = from_weights<float>(trained);
  for (auto& [name, mat] : linear_weights(eff, false))
    *mat = lowbit::dequantize(plan.at(name).codes, plan.at(name).params);
  eff.token_embd = lowbit::dequantize(plan.at("output").codes, plan.at("output").params);
  const Mat<float> train_logits = forward(eff, tokens);
  const float diff = (engine_logits - train_logits).cwiseAbs().maxCoeff();
  INFO("max |logit difference| " << diff);
  REQUIRE(diff < 1e-3f);
  // The learned step sizes are binary16 values, so the packed kernels store them exactly.
  for (const auto& [name, s] : plan)
    for (float sc : s.params.scale) {
      const uint16_t h = lowbit::float_to_half(sc);
      REQUIRE(lowbit::is_normal_half(h));
      REQUIRE(lowbit::half_to_float(h) == sc);
    }
}
