// test_engine.cpp: the llama engine against an independent scalar forward, the README goldens and
// the README's independent FP32 perplexity; plus capture, KV-cache decoding and rejected inputs.
#include "../../examples/llama/engine.hpp"
#include "../../examples/llama/perplexity.hpp"

#include "sanitized.hpp"
#include "../support.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

namespace {

using lowbit::test::have;
using lowbit::test::shared;

// Straightforward scalar llama forward, written independently of engine.hpp: one position at a
// time, plain loops, double accumulators. Returns logits [tokens][vocab].
std::vector<std::vector<double>> scalar_forward(const llama::Weights& w, const std::vector<int>& tokens) {
  const auto& c = w.config;
  const int D = c.dim, H = c.n_heads, KH = c.n_kv_heads, hd = c.head_dim, F = c.hidden_dim;
  const auto matvec = [](const lowbit::MatrixXfR& W, const std::vector<double>& x) {
    std::vector<double> y(size_t(W.rows()), 0.0);
    for (int o = 0; o < W.rows(); ++o)
      for (int i = 0; i < W.cols(); ++i) y[size_t(o)] += double(W(o, i)) * x[size_t(i)];
    return y;
  };
  const auto rmsnorm = [&](const std::vector<double>& x, const Eigen::VectorXf& g) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / double(x.size()) + double(c.rms_eps));
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * double(g(long(i)));
    return y;
  };
  const auto rotate = [&](std::vector<double>& v, int pos) {
    for (size_t h = 0; h < v.size() / size_t(hd); ++h)
      for (int i = 0; i < c.rope_dim; i += 2) {
        const double freq = 1.0 / std::pow(double(c.rope_base), double(i) / c.rope_dim);
        const double a = v[h * size_t(hd) + size_t(i)], b = v[h * size_t(hd) + size_t(i) + 1];
        v[h * size_t(hd) + size_t(i)] = a * std::cos(pos * freq) - b * std::sin(pos * freq);
        v[h * size_t(hd) + size_t(i) + 1] = a * std::sin(pos * freq) + b * std::cos(pos * freq);
      }
  };
  std::vector<std::vector<std::vector<double>>> kc(size_t(c.n_layers)), vc(size_t(c.n_layers));
  std::vector<std::vector<double>> out;
  for (int pos = 0; pos < int(tokens.size()); ++pos) {
    std::vector<double> x(static_cast<size_t>(D));
    for (int i = 0; i < D; ++i) x[size_t(i)] = w.token_embd(tokens[size_t(pos)], i);
    for (int l = 0; l < c.n_layers; ++l) {
      const auto& L = w.layers[size_t(l)];
      auto h = rmsnorm(x, L.attn_norm);
      auto q = matvec(L.wq, h);
      auto k = matvec(L.wk, h);
      const auto v = matvec(L.wv, h);
      rotate(q, pos);
      rotate(k, pos);
      kc[size_t(l)].push_back(k);
      vc[size_t(l)].push_back(v);
      std::vector<double> att(size_t(H * hd), 0.0);
      for (int head = 0; head < H; ++head) {
        const int kvh = head / (H / KH);
        std::vector<double> s(size_t(pos + 1));
        double mx = -1e300;
        for (int t = 0; t <= pos; ++t) {
          double d = 0;
          for (int i = 0; i < hd; ++i) d += q[size_t(head * hd + i)] * kc[size_t(l)][size_t(t)][size_t(kvh * hd + i)];
          s[size_t(t)] = d / std::sqrt(double(hd));
          mx = std::max(mx, s[size_t(t)]);
        }
        double sum = 0;
        for (auto& e : s) sum += (e = std::exp(e - mx));
        for (int t = 0; t <= pos; ++t)
          for (int i = 0; i < hd; ++i)
            att[size_t(head * hd + i)] += s[size_t(t)] / sum * vc[size_t(l)][size_t(t)][size_t(kvh * hd + i)];
      }
      const auto o = matvec(L.wo, att);
      for (int i = 0; i < D; ++i) x[size_t(i)] += o[size_t(i)];
      h = rmsnorm(x, L.ffn_norm);
      auto g = matvec(L.w_gate, h);
      const auto u = matvec(L.w_up, h);
      for (int i = 0; i < F; ++i) g[size_t(i)] = g[size_t(i)] / (1.0 + std::exp(-g[size_t(i)])) * u[size_t(i)];
      const auto d = matvec(L.w_down, g);
      for (int i = 0; i < D; ++i) x[size_t(i)] += d[size_t(i)];
    }
    out.push_back(matvec(w.output, rmsnorm(x, w.output_norm)));
  }
  return out;
}

double max_rel_diff(const lowbit::MatrixXfR& got, const std::vector<std::vector<double>>& want) {
  double worst = 0, scale = 0;
  for (const auto& r : want)
    for (double v : r) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < want.size(); ++i)
    for (size_t j = 0; j < want[i].size(); ++j)
      worst = std::max(worst, std::abs(double(got(long(i), long(j))) - want[i][j]));
  return worst / scale;
}

// A small random llama written with the GGUF writer: exercises GQA, partial RoPE, a tied head and
// metadata defaults without ../shared.
std::vector<uint8_t> synthetic_gguf(bool tied, int rope_dim) {
  using lowbit::io::TensorF32;
  using lowbit::io::Value;
  std::mt19937 rng(11);
  std::normal_distribution<float> n(0.0f, 0.3f);
  const auto mat = [&](const std::string& name, int rows, int cols) {
    lowbit::MatrixXfR m(rows, cols);
    for (long i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
    return TensorF32::from_matrix(name, m);
  };
  const auto gain = [&](const std::string& name, int size) {
    Eigen::VectorXf v(size);
    for (int i = 0; i < size; ++i) v(i) = 1.0f + n(rng);
    return TensorF32::from_vector(name, v);
  };
  const int D = 24, F = 40, V = 30, H = 6, KH = 2, hd = 4;
  std::vector<TensorF32> t = {mat("token_embd.weight", V, D), gain("output_norm.weight", D)};
  if (!tied) t.push_back(mat("output.weight", V, D));
  for (int l = 0; l < 2; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    t.push_back(mat(p + "attn_q.weight", H * hd, D));
    t.push_back(mat(p + "attn_k.weight", KH * hd, D));
    t.push_back(mat(p + "attn_v.weight", KH * hd, D));
    t.push_back(mat(p + "attn_output.weight", D, H * hd));
    t.push_back(gain(p + "attn_norm.weight", D));
    t.push_back(mat(p + "ffn_gate.weight", F, D));
    t.push_back(mat(p + "ffn_down.weight", D, F));
    t.push_back(mat(p + "ffn_up.weight", F, D));
    t.push_back(gain(p + "ffn_norm.weight", D));
  }
  std::vector<std::pair<std::string, Value>> meta = {
      {"general.architecture", Value::of_string("llama")},
      {"llama.embedding_length", Value::of_uint32(D)},
      {"llama.feed_forward_length", Value::of_uint32(F)},
      {"llama.block_count", Value::of_uint32(2)},
      {"llama.attention.head_count", Value::of_uint32(H)},
      {"llama.attention.head_count_kv", Value::of_uint32(KH)},
      {"llama.rope.freq_base", Value::of_float32(500.0f)},
      {"llama.vocab_size", Value::of_uint32(V)},
  };
  if (rope_dim != hd) meta.push_back({"llama.rope.dimension_count", Value::of_uint32(uint32_t(rope_dim))});
  return lowbit::io::serialize_gguf(meta, t);
}

}  // namespace

TEST_CASE("engine: synthetic llama (GQA, partial RoPE, tied/separate head) matches the scalar forward") {
  for (bool tied : {true, false}) {
    for (int rope_dim : {4, 2}) {
      const auto bytes = synthetic_gguf(tied, rope_dim);
      const auto f = lowbit::io::GgufFile::from_bytes(bytes.data(), bytes.size());
      const auto w = llama::load_weights(f);
      CHECK(w.tied_output == tied);
      CHECK(w.config.head_dim == 4);
      CHECK(w.config.rope_dim == rope_dim);
      CHECK(w.config.context_length == 2048);  // llama.context_length absent: llama.cpp's default
      CHECK(w.config.rms_eps == 1e-5f);
      CHECK(w.config.rope_base == 500.0f);
      llama::Model model(w);
      const std::vector<int> tokens = {1, 5, 29, 7, 7, 0, 13, 2, 21};
      const auto want = scalar_forward(w, tokens);
      CHECK(max_rel_diff(model.forward(tokens), want) < 1e-5);
      // Token-by-token decoding with the KV cache gives the same logits.
      model.reset();
      lowbit::MatrixXfR steps(long(tokens.size()), w.config.vocab_size);
      for (size_t i = 0; i < tokens.size(); ++i) steps.row(long(i)) = model.forward({tokens[i]});
      CHECK(max_rel_diff(steps, want) < 1e-5);
      CHECK(model.n_past() == int(tokens.size()));
    }
  }
}

TEST_CASE("engine: rejected inputs") {
  const auto bytes = synthetic_gguf(false, 4);
  const auto f = lowbit::io::GgufFile::from_bytes(bytes.data(), bytes.size());
  const auto w = llama::load_weights(f, 8);
  CHECK(w.config.context_length == 8);
  llama::Model model(w);
  CHECK_THROWS_AS(model.forward({}), lowbit::Error);
  CHECK_THROWS_AS(model.forward({30}), lowbit::Error);
  CHECK_THROWS_AS(model.forward({-1}), lowbit::Error);
  CHECK_THROWS_AS(model.forward(std::vector<int>(9, 1)), lowbit::Error);
  model.forward(std::vector<int>(8, 1));
  CHECK_THROWS_AS(model.forward({1}), lowbit::Error);  // the cache is full
  CHECK_THROWS_AS(model.set_linear(0, 0, std::make_shared<llama::Fp32Linear>(lowbit::MatrixXfR::Zero(3, 3))),
                  lowbit::Error);
  CHECK_THROWS_AS(model.set_linear(2, 0, std::make_shared<llama::Fp32Linear>(w.layers[0].wq)), lowbit::Error);
  CHECK_THROWS_AS(model.set_linear(0, 7, std::make_shared<llama::Fp32Linear>(w.layers[0].wq)), lowbit::Error);
  CHECK_THROWS_AS(model.set_linear(0, 0, nullptr), lowbit::Error);
  CHECK_THROWS_AS(model.set_output(nullptr), lowbit::Error);
  // Missing tensors, wrong shapes, wrong architecture, non-finite weights.
  auto meta = f.metadata();
  const auto rebuild = [&](const std::vector<std::pair<std::string, lowbit::io::Value>>& m,
                           const std::string& drop, const std::string& corrupt) {
    std::vector<lowbit::io::TensorF32> ts;
    for (const auto& t : f.tensors()) {
      if (t.name == drop) continue;
      const lowbit::MatrixXfR x = f.read(t);
      lowbit::io::TensorF32 tt{t.name, t.ne, std::vector<float>(x.data(), x.data() + x.size())};
      if (t.name == corrupt) tt.data[3] = std::nanf("");
      ts.push_back(tt);
    }
    const auto b = lowbit::io::serialize_gguf(m, ts);
    return llama::load_weights(lowbit::io::GgufFile::from_bytes(b.data(), b.size()));
  };
  CHECK_NOTHROW(rebuild(meta, "", ""));
  CHECK_THROWS_AS(rebuild(meta, "blk.1.ffn_up.weight", ""), lowbit::Error);
  CHECK_THROWS_AS(rebuild(meta, "", "blk.0.attn_k.weight"), lowbit::Error);
  auto bad = meta;
  bad[0].second = lowbit::io::Value::of_string("gpt2");
  CHECK_THROWS_AS(rebuild(bad, "", ""), lowbit::Error);
  bad = meta;
  bad[2].second = lowbit::io::Value::of_uint32(41);  // feed_forward_length disagrees with the tensors
  CHECK_THROWS_AS(rebuild(bad, "", ""), lowbit::Error);
  bad = meta;
  bad[5].second = lowbit::io::Value::of_uint32(4);  // 6 heads are not a multiple of 4 kv heads
  CHECK_THROWS_AS(rebuild(bad, "", ""), lowbit::Error);
}

TEST_CASE("engine: capture hook sees every Linear input once per distinct input") {
  const auto bytes = synthetic_gguf(false, 4);
  const auto f = lowbit::io::GgufFile::from_bytes(bytes.data(), bytes.size());
  llama::Model model(llama::load_weights(f));
  std::map<std::string, long> rows;
  model.set_capture([&](int layer, const std::string& name, const lowbit::MatrixXfR& x) {
    rows[std::to_string(layer) + "." + name] += x.rows();
    CHECK(x.cols() == (name == "attn_output" ? 24 : name == "ffn_down" ? 40 : 24));
  });
  model.forward({1, 2, 3});
  model.forward({4});
  // q/k/v share one input (reported as attn_q), gate/up too (reported as ffn_gate).
  CHECK(rows == std::map<std::string, long>{{"-1.output", 4}, {"0.attn_q", 4}, {"0.attn_output", 4},
                                             {"0.ffn_gate", 4}, {"0.ffn_down", 4}, {"1.attn_q", 4},
                                             {"1.attn_output", 4}, {"1.ffn_gate", 4}, {"1.ffn_down", 4}});
}

TEST_CASE("engine: stories260K logits, greedy goldens and the README's FP32 perplexity") {
  const std::string model_path = shared("models/stories260K.gguf");
  const std::string text_path = shared("data/tinystories_val.txt");
  if (!have(model_path) || !have(text_path)) {
    WARN("SKIPPED: " << model_path << " or " << text_path << " is absent (needs ../shared)");
    return;
  }
  // Eigen's OpenMP GEMM only loses on these tiny matrices (and spins badly on a loaded machine).
  Eigen::setNbThreads(1);
  const auto file = lowbit::io::GgufFile::open(model_path);
  const auto w = llama::load_weights(file, 512);
  const auto tok = llama::Tokenizer::from_gguf(file);
  llama::Model model(w);
  const auto prompt = tok.encode("Once upon a time, there was", true);
  CHECK(max_rel_diff(model.forward(prompt), scalar_forward(w, prompt)) < 1e-5);

  // The README's 32 greedy tokens from BOS, decoding one token at a time.
  const std::vector<int> golden = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315,
                                   421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408,
                                   419, 292, 411, 322, 265, 282, 295, 433, 426, 385};
  model.reset();
  std::vector<int> got;
  lowbit::MatrixXfR logits = model.forward({tok.bos_id()});
  for (int i = 0; i < 32; ++i) {
    Eigen::Index next;
    logits.row(0).maxCoeff(&next);
    got.push_back(int(next));
    logits = model.forward({int(next)});
  }
  CHECK(got == golden);

  // The README's independent reference: chunks from the START of the file, first >= 20,000
  // predictions -> 20,054 predictions, mean NLL 1.4354. (Fewer chunks under sanitizers: slow.)
  std::stringstream ss;
  ss << std::ifstream(text_path).rdbuf();
  const auto chunks = llama::split_chunks(ss.str());
  CHECK(chunks.size() == 4300);
  llama::PerplexityOptions opt;
  opt.min_predictions = kSanitized ? 500 : 20000;
  const auto r = llama::evaluate_perplexity(chunks, tok, [&](const std::vector<int>& t) {
    model.reset();
    return model.forward(t);
  }, opt);
  if (!kSanitized) {
    CHECK(r.predictions == 20054);
    CHECK(r.chunks == 205);
    CHECK(std::abs(r.mean_nll - 1.4354) < 0.00006);
    CHECK(std::abs(r.ppl - 4.20) < 0.005);
  } else {
    CHECK(r.predictions >= 500);
    CHECK(r.mean_nll > 1.0);
    CHECK(r.mean_nll < 2.0);
  }
}

TEST_CASE("perplexity: chunks, halves and rejected inputs") {
  CHECK(llama::split_chunks("a\n\n\n b \n\n\n\nc d\n") == std::vector<std::string>{"a", "b", "c d"});
  CHECK(llama::split_chunks(" \n\n\n").empty());
  const auto h = llama::split_halves({"1", "2", "3", "4", "5"});
  CHECK(h.calibration == std::vector<std::string>{"1", "2"});
  CHECK(h.evaluation == std::vector<std::string>{"3", "4", "5"});
  // A uniform model over V tokens has NLL log(V) per prediction, whatever the text.
  llama::Tokenizer tok({"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b"}, std::vector<float>(6, 0.f), 1, 2, 0);
  const auto uniform = [](const std::vector<int>& t) { return lowbit::MatrixXfR::Zero(long(t.size()), 6).eval(); };
  llama::PerplexityOptions opt;
  opt.all = true;
  opt.context = 4;
  const auto r = llama::evaluate_perplexity({"ab", "a b a b a"}, tok, uniform, opt);
  CHECK(r.predictions == 3 + 3);  // [BOS ▁ a b] and [BOS ▁ a ▁] after truncation to 4
  CHECK(r.chunks == 2);
  CHECK(r.mean_nll == Approx(std::log(6.0)));
  opt.all = false;
  opt.min_predictions = 1;
  CHECK(llama::evaluate_perplexity({"ab", "ab"}, tok, uniform, opt).chunks == 1);
  CHECK_THROWS_AS(llama::evaluate_perplexity({}, tok, uniform, opt), lowbit::Error);
  opt.context = 1;
  CHECK_THROWS_AS(llama::evaluate_perplexity({"a"}, tok, uniform, opt), lowbit::Error);
  opt.context = 8;
  CHECK_THROWS_AS(llama::evaluate_perplexity({"a"}, tok, llama::ScoreFn{}, opt), lowbit::Error);
  const auto wrong_rows = [](const std::vector<int>&) { return lowbit::MatrixXfR::Zero(1, 6).eval(); };
  CHECK_THROWS_AS(llama::evaluate_perplexity({"ab"}, tok, wrong_rows, opt), lowbit::Error);
  const auto nan = [](const std::vector<int>& t) {
    return lowbit::MatrixXfR::Constant(long(t.size()), 6, std::nanf("")).eval();
  };
  CHECK_THROWS_AS(llama::evaluate_perplexity({"ab"}, tok, nan, opt), lowbit::Error);
}
