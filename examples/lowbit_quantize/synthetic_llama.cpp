// synthetic_llama.cpp: synthetic-llama, a llama GGUF of any shape with random F16 weights, streamed
// to disk a tensor at a time, for measuring lowbit-quantize's time and memory at full scale (the
// defaults are TinyLlama-1.1B's shapes). The tokenizer is a real model's, padded to the vocabulary.
#include "../llama/model.hpp"

#include <lowbit/core/half.hpp>
#include <lowbit/io/gguf.hpp>
#include <lowbit/io/gguf_writer.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

using lowbit::io::Metadata;
using lowbit::io::TensorSpec;
using lowbit::io::TensorType;
using lowbit::io::Value;
using lowbit::io::ValueType;

struct Shape {
  int layers = 22, dim = 2048, ffn = 5632, heads = 32, kv_heads = 4, vocab = 32000, ctx = 2048;
};

/// The llama hyperparameters of `s`, then every tokenizer.* key of `tok` with its pieces (and
/// their scores and types) padded to s.vocab by unused pieces no merge can form.
Metadata metadata(const Shape& s, const lowbit::io::GgufFile& tok) {
  llama::Config c;
  c.dim = s.dim;
  c.hidden_dim = s.ffn;
  c.n_layers = s.layers;
  c.n_heads = s.heads;
  c.n_kv_heads = s.kv_heads;
  c.head_dim = c.rope_dim = s.dim / s.heads;
  c.vocab_size = s.vocab;
  c.context_length = s.ctx;
  Metadata m = llama::config_metadata(c, "synthetic");
  const size_t pieces = tok.at("tokenizer.ggml.tokens").as_array().size();
  lowbit::detail::require(pieces <= size_t(s.vocab), "--vocab {}: the tokenizer has {} pieces",
                          s.vocab, pieces);
  for (const auto& [key, value] : tok.metadata()) {
    if (key.rfind("tokenizer.", 0) != 0) continue;
    if (value.type != ValueType::Array || value.array.size() != pieces) {
      m.emplace_back(key, value);
      continue;
    }
    std::vector<Value> a = value.array;
    for (size_t i = pieces; i < size_t(s.vocab); ++i) {
      if (key == "tokenizer.ggml.tokens") a.push_back(Value::of_string(fmt::format("<unused{}>", i)));
      else if (key == "tokenizer.ggml.scores") a.push_back(Value::of_float32(-1e9f));
      else if (key == "tokenizer.ggml.token_type") a.push_back(Value::of_int32(5));  // unused
      else lowbit::detail::fail("{}: cannot pad this per-piece array", key);
    }
    m.emplace_back(key, Value::of_array(value.element_type, std::move(a)));
  }
  return m;
}

/// The tensors in llama.cpp's order: Linears and the embedding in F16, norms in F32.
std::vector<TensorSpec> tensors(const Shape& s) {
  const auto d = uint64_t(s.dim), f = uint64_t(s.ffn), v = uint64_t(s.vocab);
  const auto kv = uint64_t(s.dim / s.heads * s.kv_heads);
  std::vector<TensorSpec> t = {{"token_embd.weight", {d, v}, TensorType::F16},
                               {"output_norm.weight", {d}, TensorType::F32},
                               {"output.weight", {d, v}, TensorType::F16}};
  for (int l = 0; l < s.layers; ++l) {
    const auto n = [l](const char* name) { return fmt::format("blk.{}.{}.weight", l, name); };
    for (TensorSpec x : std::vector<TensorSpec>{
             {n("attn_norm"), {d}, TensorType::F32}, {n("attn_q"), {d, d}, TensorType::F16},
             {n("attn_k"), {d, kv}, TensorType::F16}, {n("attn_v"), {d, kv}, TensorType::F16},
             {n("attn_output"), {d, d}, TensorType::F16}, {n("ffn_norm"), {d}, TensorType::F32},
             {n("ffn_gate"), {d, f}, TensorType::F16}, {n("ffn_down"), {f, d}, TensorType::F16},
             {n("ffn_up"), {d, f}, TensorType::F16}})
      t.push_back(std::move(x));
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"synthetic-llama: a llama GGUF with random F16 weights (TinyLlama-1.1B's shapes by "
               "default) and a real model's tokenizer, for measuring lowbit-quantize at scale"};
  Shape s;
  std::string out, tokenizer_from;
  unsigned seed = 1;
  app.add_option("--out", out, "GGUF to write")->required();
  app.add_option("--tokenizer-from", tokenizer_from, "llama GGUF whose tokenizer to copy")
      ->required()->check(CLI::ExistingFile);
  app.add_option("--layers", s.layers)->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--dim", s.dim)->capture_default_str()->check(CLI::Range(1, 1 << 16));
  app.add_option("--ffn", s.ffn)->capture_default_str()->check(CLI::Range(1, 1 << 18));
  app.add_option("--heads", s.heads)->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--kv-heads", s.kv_heads)->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--vocab", s.vocab)->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--ctx", s.ctx)->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--seed", seed)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    lowbit::detail::require(s.dim % s.heads == 0 && s.heads % s.kv_heads == 0,
                            "--dim {} / --heads {} / --kv-heads {}: heads must divide the width "
                            "and KV heads the heads", s.dim, s.heads, s.kv_heads);
    const auto tok = lowbit::io::GgufFile::open(tokenizer_from);
    const auto specs = tensors(s);
    lowbit::io::GgufWriter w(out, metadata(s, tok), specs);
    // Weights ~ N(0, 1/in_features) keep every Linear's output at its input's scale; the
    // embedding is N(0, 1). Ones for the norms.
    std::mt19937 rng(seed);
    std::vector<uint16_t> half;
    std::vector<float> ones;
    for (size_t i = 0; i < specs.size(); ++i) {
      const TensorSpec& t = specs[i];
      std::fprintf(stderr, "\rtensor %zu/%zu %-32s", i + 1, specs.size(), t.name.c_str());
      if (t.type == TensorType::F32) {
        ones.assign(size_t(t.ne[0]), 1.0f);
        w.write_tensor(t.name, ones.data(), ones.size() * sizeof(float));
        continue;
      }
      const bool embedding = t.name == "token_embd.weight";
      std::normal_distribution<float> n(0.0f, embedding ? 1.0f : 1.0f / std::sqrt(float(t.ne[0])));
      half.resize(size_t(t.ne[0]));
      for (uint64_t r = 0; r < t.ne[1]; ++r) {
        for (auto& h : half) h = lowbit::float_to_half(n(rng));
        w.append(half.data(), half.size() * sizeof(uint16_t));
      }
    }
    w.finish();
    fmt::print(stderr, "\n");
    fmt::print("{}: {} tensors, {:.3f} B parameters, {:.2f} GB\n", out, specs.size(),
               [&] {
                 double n = 0;
                 for (const auto& t : specs) n += double(t.ne[0]) * double(t.ne.size() > 1 ? t.ne[1] : 1);
                 return n / 1e9;
               }(),
               double(w.file_size()) / 1e9);
  } catch (const std::exception& e) {
    fmt::print(stderr, "synthetic-llama: {}\n", e.what());
    return 1;
  }
}
