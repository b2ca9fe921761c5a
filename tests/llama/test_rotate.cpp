// test_rotate.cpp: folded norms and rotated residual stream / heads give the original logits (fp32
// rounding level) on synthetic llamas and on stories260K; the rotated GGUF reloads with the same
// logits and its record; rejected inputs; the study's plans of rotated (untied) models and its
// held-out validation split.
#include "../../examples/llama/engine.hpp"
#include "../../examples/llama/rotate.hpp"
#include "../../examples/llama/tokenizer.hpp"
#include "../../examples/llama_study/study.hpp"
#include "tiny_llama.hpp"
#include "../support.hpp"

#include <lowbit/ptq/seeded_random.hpp>

#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <random>

namespace {

using lowbit::MatrixXfR;
using lowbit::io::Value;
using lowbit::ptq::RotationKind;

using lowbit::test::have;
using lowbit::test::shared;

/// max |got − want| / max |want|.
double fold_diff(const MatrixXfR& got, const MatrixXfR& want) {
  return double((got - want).cwiseAbs().maxCoeff()) / double(want.cwiseAbs().maxCoeff());
}

// The bound every equivalence check uses: max |logit − logit₀| / max |logit₀|. The transformed
// weights are rounded to float once (products in double), so the two fp32 forward passes differ
// by accumulated rounding only: measured 1.7e-7..1.2e-6 on every case here (stories260K:
// 5.9e-7..7.8e-7); a wrong fold or rotation gives O(1). 1e-5 is about 170 float ulps (2^-24).
constexpr double kFoldBound = 1e-5;


MatrixXfR logits(const llama::Weights& w, const std::vector<int>& tokens) {
  llama::Model m(w);
  return m.forward(tokens);
}

// A random llama of any shape, gains around 1 (sd 0.3) so that folding them matters.
llama::Weights synthetic(int dim, int heads, int kv_heads, int head_dim, int hidden, bool tied, uint64_t seed) {
  lowbit::ptq::SeededRandom rng(seed);
  const auto mat = [&](int r, int c, double sd) {
    MatrixXfR m(r, c);
    for (lowbit::Index i = 0; i < m.size(); ++i) m.data()[i] = float(sd * rng.gaussian());
    return m;
  };
  const auto gain = [&](int n) {
    Eigen::VectorXf v(n);
    for (int i = 0; i < n; ++i) v(i) = float(1.0 + 0.3 * rng.gaussian());
    return v;
  };
  llama::Weights w;
  auto& c = w.config;
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_layers = 2;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.vocab_size = 40;
  c.context_length = 32;
  c.rope_dim = head_dim % 2 == 0 ? head_dim : head_dim - 1;
  const double s = 1.0 / std::sqrt(double(dim));
  w.token_embd = mat(c.vocab_size, dim, 0.7);
  w.tied_output = tied;
  w.output = tied ? w.token_embd : mat(c.vocab_size, dim, 0.4);
  w.output_norm = gain(dim);
  for (int l = 0; l < 2; ++l) {
    llama::LayerWeights L;
    L.wq = mat(heads * head_dim, dim, s);
    L.wk = mat(kv_heads * head_dim, dim, s);
    L.wv = mat(kv_heads * head_dim, dim, s);
    L.wo = mat(dim, heads * head_dim, 1.0 / std::sqrt(double(heads * head_dim)));
    L.w_gate = mat(hidden, dim, s);
    L.w_down = mat(dim, hidden, 1.0 / std::sqrt(double(hidden)));
    L.w_up = mat(hidden, dim, s);
    L.attn_norm = gain(dim);
    L.ffn_norm = gain(dim);
    w.layers.push_back(L);
  }
  return w;
}

bool all_ones(const Eigen::VectorXf& v) { return (v.array() == 1.0f).all(); }

struct Variant {
  const char* name;
  llama::RotateOptions opt;
};

std::vector<Variant> variants() {
  llama::RotateOptions fold, rot, rot_heads, random, heads_only;
  fold.residual = false;
  rot_heads.heads = true;
  rot_heads.seed = 77;
  random.kind = RotationKind::random_orthogonal;
  random.heads = true;
  random.head_kind = RotationKind::random_orthogonal;
  random.seed = 5;
  heads_only.fold_norms = false;
  heads_only.residual = false;
  heads_only.heads = true;
  return {{"fold", fold}, {"fold+rotate", rot}, {"fold+rotate+heads", rot_heads},
          {"random orthogonal", random}, {"heads only", heads_only}};
}

// Checks one transformed model against the original: same logits, llama structure, record.
void check_variant(const llama::Weights& w, const Variant& v, const std::vector<int>& tokens,
                   double bound = kFoldBound) {
  INFO("variant " << v.name << ", dim " << w.config.dim << ", head_dim " << w.config.head_dim
                  << (w.tied_output ? ", tied" : ", untied"));
  const MatrixXfR want = logits(w, tokens);
  const llama::RotatedModel r = llama::rotate_model(w, v.opt);
  const llama::Weights& t = r.weights;
  const double d = fold_diff(logits(t, tokens), want);
  INFO("relative logit difference " << d);
  CHECK(d < bound);
  // Shapes unchanged; gains ones after folding; a tied head untied once it changed.
  CHECK(t.token_embd.rows() == w.token_embd.rows());
  CHECK(t.token_embd.cols() == w.token_embd.cols());
  for (size_t l = 0; l < w.layers.size(); ++l)
    for (int k = 0; k < 7; ++k) {
      CHECK(llama::linear_weight(t.layers[l], k).rows() == llama::linear_weight(w.layers[l], k).rows());
      CHECK(llama::linear_weight(t.layers[l], k).cols() == llama::linear_weight(w.layers[l], k).cols());
    }
  CHECK(r.record.norms_folded == v.opt.fold_norms);
  if (v.opt.fold_norms) {
    CHECK(all_ones(t.output_norm));
    for (const auto& L : t.layers) CHECK((all_ones(L.attn_norm) && all_ones(L.ffn_norm)));
  }
  const bool head_changed = v.opt.fold_norms || v.opt.residual;
  CHECK(t.tied_output == (w.tied_output && !head_changed));
  CHECK(r.record.head_untied == (w.tied_output && head_changed));
  CHECK(r.record.seed == v.opt.seed);
  if (v.opt.residual) {
    const std::string want_kind = v.opt.kind ? std::string(lowbit::ptq::to_string(*v.opt.kind))
                                  : lowbit::ptq::has_hadamard(w.config.dim) ? "hadamard"
                                                                            : "random_orthogonal";
    CHECK(r.record.residual == want_kind);
    // The stream really is rotated: the embedding is E·Q, not E.
    CHECK((t.token_embd - w.token_embd).cwiseAbs().maxCoeff() > 0.05f);
  } else {
    CHECK(r.record.residual == "none");
  }
  CHECK((r.record.heads != "none") == v.opt.heads);
  if (v.opt.heads) CHECK((t.layers[0].wv - w.layers[0].wv).cwiseAbs().maxCoeff() > 0.01f);
}

}  // namespace

TEST_CASE("rotate: the tiny llama fixture (dim 16, GQA 4/2), tied and untied, keeps its logits") {
  for (bool tied : {true, false}) {
    std::mt19937 rng(3);
    const auto p = tiny::params<float>(tied, rng);
    llama::Weights w = llama::train::to_weights(p);
    w.tied_output = tied;
    const std::vector<int> tokens = {1, 5, 31, 7, 7, 0, 13, 2, 21, 4, 9, 30};
    for (const auto& v : variants()) check_variant(w, v, tokens);
  }
}

TEST_CASE("rotate: widths with Paley Hadamards, without any, odd head sizes keep their logits") {
  const std::vector<int> tokens = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7};
  // dim 24 = 12·2 (Paley core), heads 6/2 of 4; dim 20 (Paley I of 19), heads 5/5 of 4; dim 18
  // (no Hadamard: random orthogonal), heads 3/1 of 6 (none either); dim 24 with 4/2 heads of 5
  // (q/k/v narrower than the stream, partial RoPE).
  struct Shape { int dim, heads, kv, hd, hidden; };
  for (const Shape s : {Shape{24, 6, 2, 4, 40}, Shape{20, 5, 5, 4, 36}, Shape{18, 3, 1, 6, 30}, Shape{24, 4, 2, 5, 28}}) {
    for (bool tied : {true, false}) {
      const llama::Weights w = synthetic(s.dim, s.heads, s.kv, s.hd, s.hidden, tied, uint64_t(s.dim * 7 + s.hd));
      for (const auto& v : variants()) check_variant(w, v, tokens);
    }
  }
  // Per-head kinds follow head_dim: Hadamard for 4, random orthogonal for 6 (none exists).
  llama::RotateOptions o;
  o.heads = true;
  CHECK(llama::rotate_model(synthetic(24, 6, 2, 4, 40, false, 1), o).record.heads == "hadamard");
  CHECK(llama::rotate_model(synthetic(18, 3, 1, 6, 30, false, 1), o).record.heads == "random_orthogonal");
  CHECK(llama::rotate_model(synthetic(18, 3, 1, 6, 30, false, 1), o).record.residual == "random_orthogonal");
  // The same seed gives the same weights; another seed other weights.
  const auto w = synthetic(24, 6, 2, 4, 40, true, 9);
  o.seed = 1;
  const auto a = llama::rotate_model(w, o), b = llama::rotate_model(w, o);
  o.seed = 2;
  const auto c = llama::rotate_model(w, o);
  CHECK(a.weights.token_embd == b.weights.token_embd);
  CHECK(a.weights.layers[1].wo == b.weights.layers[1].wo);
  CHECK(a.weights.token_embd != c.weights.token_embd);
  CHECK(a.record.describe() == "fold+hadamard+heads:hadamard(seed 1)");
  llama::RotateOptions none;
  none.fold_norms = none.residual = false;
  CHECK(llama::rotate_model(w, none).record.describe() == "none");
  CHECK(llama::rotate_model(w, none).weights.tied_output);
}

TEST_CASE("rotate: the rotated GGUF reloads with the same logits and carries the record") {
  for (bool tied : {true, false}) {
    const llama::Weights w = synthetic(24, 6, 2, 4, 40, tied, 4);
    llama::RotateOptions o;
    o.heads = true;
    o.seed = 123456789012345ull;
    const auto r = llama::rotate_model(w, o);
    const auto bytes = llama::serialize_model(r.weights, tiny::metadata(w.config), r.record);
    const auto f = lowbit::io::GgufFile::from_bytes(bytes.data(), bytes.size());
    const llama::Weights back = llama::load_weights(f);
    CHECK_FALSE(back.tied_output);
    CHECK(f.find_tensor("output.weight") != nullptr);
    CHECK(f.tensors().size() == 3 + 9 * 2);
    const std::vector<int> tokens = {1, 2, 3, 4, 5, 6, 7, 39};
    const MatrixXfR got = logits(back, tokens);
    CHECK(got == logits(r.weights, tokens));  // F32 round trip: bit-identical weights and logits
    CHECK(fold_diff(got, logits(w, tokens)) < kFoldBound);
    CHECK(f.get_string("general.name", "") == "synthetic");  // the source's metadata is kept
    const auto rec = llama::RotationRecord::from_gguf(f);
    REQUIRE(rec.has_value());
    CHECK(rec->residual == "hadamard");
    CHECK(rec->heads == "hadamard");
    CHECK(rec->seed == 123456789012345ull);
    CHECK(rec->norms_folded);
    CHECK(rec->head_untied == tied);
    CHECK(f.at("lowbit.rotation.seed").type == lowbit::io::ValueType::UInt64);
  }
  // write_model: through a temporary file renamed into place; metadata keys replaced, not doubled.
  const llama::Weights w = synthetic(16, 4, 2, 4, 24, true, 8);
  const auto r = llama::rotate_model(w, {});
  auto meta = tiny::metadata(w.config);
  meta.emplace_back("lowbit.rotation.kind", Value::of_string("stale"));
  const std::string path = "test_rotate_model.gguf";
  llama::write_model(path, r.weights, meta, r.record);
  CHECK_FALSE(have(path + ".tmp"));
  const auto f = lowbit::io::GgufFile::open(path);
  CHECK(f.get_string("lowbit.rotation.kind", "") == "hadamard");
  size_t kinds = 0;
  for (const auto& kv : f.metadata()) kinds += kv.first == "lowbit.rotation.kind";
  CHECK(kinds == 1);
  CHECK(logits(llama::load_weights(f), {1, 2, 3}) == logits(r.weights, {1, 2, 3}));
  std::remove(path.c_str());
}

TEST_CASE("rotate: stories260K folded and rotated keeps its logits and the GGUF reloads") {
  const std::string model_path = shared("models/stories260K.gguf");
  if (!have(model_path)) {
    WARN("SKIPPED: " << model_path << " is absent (needs ../shared beside the project)");
    return;
  }
  Eigen::setNbThreads(1);
  const auto file = lowbit::io::GgufFile::open(model_path);
  const llama::Weights w = llama::load_weights(file, 512);
  const auto tok = llama::Tokenizer::from_gguf(file);
  CHECK(w.output == w.token_embd);  // the file stores the tied table twice
  const auto prompt = tok.encode("Once upon a time, there was a little girl named Lily. She loved to play", true);
  for (const auto& v : variants()) check_variant(w, v, prompt);
  // Write the fully rotated model next to the build, reload it, compare.
  llama::RotateOptions o;
  o.heads = true;
  o.seed = 2024;
  const auto r = llama::rotate_model(w, o);
  CHECK(r.record.residual == "hadamard");  // dim 64
  CHECK(r.record.heads == "hadamard");     // head_dim 8
  const std::string path = "test_rotate_stories260K.gguf";
  llama::write_model(path, r.weights, file.metadata(), r.record);
  const auto f = lowbit::io::GgufFile::open(path);
  const llama::Weights back = llama::load_weights(f, 512);
  const auto tok2 = llama::Tokenizer::from_gguf(f);
  CHECK(tok2.encode("Once upon a time", true) == tok.encode("Once upon a time", true));
  CHECK(logits(back, prompt) == logits(r.weights, prompt));
  CHECK(fold_diff(logits(back, prompt), logits(w, prompt)) < kFoldBound);
  CHECK(llama::RotationRecord::from_gguf(f)->describe() == "fold+hadamard+heads:hadamard(seed 2024)");
  CHECK_FALSE(llama::RotationRecord::from_gguf(file).has_value());
  std::remove(path.c_str());
}

TEST_CASE("rotate: rejected inputs") {
  const llama::Weights w = synthetic(18, 3, 1, 6, 30, false, 2);
  llama::RotateOptions o;
  o.fold_norms = false;  // a residual rotation without folding the gains changes the function
  CHECK_THROWS_AS(llama::rotate_model(w, o), lowbit::Error);
  o = {};
  o.kind = RotationKind::hadamard;  // no Hadamard of order 18
  CHECK_THROWS_AS(llama::rotate_model(w, o), lowbit::Error);
  o = {};
  o.heads = true;
  o.head_kind = RotationKind::hadamard;  // nor of order 6
  CHECK_THROWS_AS(llama::rotate_model(w, o), lowbit::Error);
  o = {};
  o.kind = RotationKind::custom;
  CHECK_THROWS_AS(llama::rotate_model(w, o), lowbit::Error);
  for (int which = 0; which < 4; ++which) {
    llama::Weights bad = w;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    if (which == 0) bad.layers[1].w_down(2, 3) = nan;
    if (which == 1) bad.layers[0].attn_norm(4) = nan;
    if (which == 2) bad.token_embd(0, 0) = nan;
    if (which == 3) bad.output_norm(0) = std::numeric_limits<float>::infinity();
    INFO("non-finite case " << which);
    CHECK_THROWS_AS(llama::rotate_model(bad, {}), lowbit::Error);
    llama::RotateOptions fold_only;
    fold_only.residual = false;
    CHECK_THROWS_AS(llama::rotate_model(bad, fold_only), lowbit::Error);
  }
  llama::Weights bad = w;
  bad.layers[0].wq = MatrixXfR::Zero(5, 18);
  CHECK_THROWS_AS(llama::rotate_model(bad, {}), lowbit::Error);
  bad = w;
  bad.layers.pop_back();
  CHECK_THROWS_AS(llama::rotate_model(bad, {}), lowbit::Error);
  CHECK_THROWS_AS(llama::serialize_model(bad, tiny::metadata(w.config), {}), lowbit::Error);
  CHECK_THROWS_AS(llama::write_model("/nonexistent-dir/x.gguf", w, tiny::metadata(w.config), {}), lowbit::Error);
  // A record whose seed is not uint64 is refused on reading.
  auto meta = tiny::metadata(w.config);
  meta.emplace_back("lowbit.rotation.kind", Value::of_string("hadamard"));
  meta.emplace_back("lowbit.rotation.seed", Value::of_int32(3));
  const auto bytes = lowbit::io::serialize_gguf(meta, llama::gguf_tensors(w));
  CHECK_THROWS_AS(llama::RotationRecord::from_gguf(lowbit::io::GgufFile::from_bytes(bytes.data(), bytes.size())),
                  lowbit::Error);
}

TEST_CASE("study: a rotated (untied) model's plan quantizes and counts the embedding, INT8 activations too") {
  const llama::Weights w = synthetic(24, 6, 2, 4, 40, true, 21);
  const auto r = llama::rotate_model(w, {});
  REQUIRE_FALSE(study::is_tied(r.weights));
  std::vector<std::vector<int>> seqs;
  lowbit::ptq::SeededRandom rng(4);
  for (int s = 0; s < 6; ++s) {
    std::vector<int> t;
    for (int i = 0; i < 20; ++i) t.push_back(int(rng.next_u64() % 40));
    seqs.push_back(t);
  }
  const auto calib = study::capture_calibration(r.weights, seqs, 1000);
  const auto scheme = lowbit::Scheme::per_group(4, 8);
  const study::Plan plan = study::uniform_plan(r.weights, calib, scheme, "gptq", true);
  REQUIRE(plan.count("token_embd") == 1);
  CHECK(plan.at("token_embd").method == "gamma");  // a lookup has no input for GPTQ
  CHECK(study::uniform_plan(r.weights, calib, scheme, "rtn", true).at("token_embd").method == "rtn");
  CHECK(study::uniform_plan(w, study::capture_calibration(w, seqs, 1000), scheme, "rtn", true).count("token_embd") == 0);
  // Bytes: fp32 norms + every quantized tensor (embedding and head separately), counted here by hand.
  size_t want = 4 * size_t(24 + 2 * 2 * 24) + lowbit::quantized_bytes(scheme, 40, 24) * 2;
  for (const auto& L : r.weights.layers)
    for (int k = 0; k < 7; ++k)
      want += lowbit::quantized_bytes(scheme, llama::linear_weight(L, k).rows(), llama::linear_weight(L, k).cols());
  CHECK(study::model_bytes(r.weights, plan) == want);
  study::Plan no_embd = plan;
  no_embd.erase("token_embd");
  CHECK(study::model_bytes(r.weights, no_embd) == want - lowbit::quantized_bytes(scheme, 40, 24) + 4 * 40 * 24);
  // The model runs the dequantized embedding and the packed Linears: exactly a model built by
  // hand from them; close to an FP32 model of the dequantized weights (the packed kernels keep
  // scales in binary16); INT8 activations change the logits a little.
  llama::Weights deq = r.weights;
  deq.token_embd = lowbit::dequantize(plan.at("token_embd").codes, plan.at("token_embd").params);
  llama::Model hand(deq);
  hand.set_output(study::make_packed_linear(plan.at("output")));
  deq.output = lowbit::dequantize(plan.at("output").codes, plan.at("output").params);
  for (int l = 0; l < 2; ++l)
    for (int k = 0; k < 7; ++k) {
      const auto& s = plan.at("blk." + std::to_string(l) + "." + llama::linear_names()[size_t(k)]);
      hand.set_linear(l, k, study::make_packed_linear(s));
      llama::linear_weight(deq.layers[size_t(l)], k) = lowbit::dequantize(s.codes, s.params);
    }
  const std::vector<int> tokens = {1, 2, 3, 4, 5, 6};
  const MatrixXfR want_logits = hand.forward(tokens);
  llama::Model m = study::build_model(r.weights, plan);
  CHECK(m.forward(tokens) == want_logits);
  CHECK(fold_diff(want_logits, logits(deq, tokens)) < 2e-3);
  llama::Model m8 = study::build_model(r.weights, plan, lowbit::ActivationQuant::int8);
  const double d8 = fold_diff(m8.forward(tokens), want_logits);
  CHECK(d8 > 0.0);   // activations really are quantized
  CHECK(d8 < 0.05);  // to 8 bits
}

TEST_CASE("study: the validation split is the calibration half's tail, disjoint from the fit part") {
  llama::Tokenizer tok({"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b"}, std::vector<float>(6, 0.f), 1, 2, 0);
  // Chunk i is "a" repeated i+1 times: [BOS ▁ a ...] gives i + 2 predictions (context 64).
  std::vector<std::string> chunks;
  for (int i = 0; i < 10; ++i) chunks.push_back(std::string(size_t(i + 1), 'a'));
  const auto v = study::split_validation(chunks, tok, 64, 20);
  // From the end: 11 + 10 = 21 >= 20 predictions -> the last two chunks.
  CHECK(v.validation == std::vector<std::string>(chunks.end() - 2, chunks.end()));
  CHECK(v.validation_predictions == 21);
  CHECK(v.fit == std::vector<std::string>(chunks.begin(), chunks.end() - 2));
  REQUIRE(v.fit_sequences.size() == 8);
  CHECK(v.fit_sequences[0] == llama::chunk_tokens(tok, chunks[0], 64));
  CHECK_THROWS_AS(study::split_validation(chunks, tok, 64, 0), lowbit::Error);
  CHECK_THROWS_AS(study::split_validation(chunks, tok, 64, 1000), lowbit::Error);  // nothing left to fit
  CHECK_THROWS_AS(study::split_validation({}, tok, 64, 1), lowbit::Error);
}
