// model.hpp: llama-architecture hyper-parameters and FP32 weights, loaded from a GGUF file.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/io/gguf.hpp>

#include <Eigen/Core>

#include <cmath>
#include <string>
#include <vector>

namespace llama {

/// Hyper-parameters; absent GGUF keys take llama.cpp's defaults.
struct Config {
  int dim = 0;             ///< llama.embedding_length
  int hidden_dim = 0;      ///< llama.feed_forward_length
  int n_layers = 0;        ///< llama.block_count
  int n_heads = 0;         ///< llama.attention.head_count
  int n_kv_heads = 0;      ///< llama.attention.head_count_kv (default n_heads)
  int head_dim = 0;        ///< llama.attention.key_length (default dim / n_heads)
  int vocab_size = 0;      ///< llama.vocab_size, else the tokenizer's token count
  int context_length = 0;  ///< training context (positions scored); llama.context_length unless overridden
  float rms_eps = 1e-5f;   ///< llama.attention.layer_norm_rms_epsilon
  float rope_base = 10000.f;  ///< llama.rope.freq_base
  int rope_dim = 0;        ///< llama.rope.dimension_count (default head_dim): leading dims rotated
};

/// One transformer block; every matrix is [out, in] row-major (as GGUF stores it).
struct LayerWeights {
  lowbit::MatrixXfR wq, wk, wv, wo, w_gate, w_down, w_up;
  Eigen::VectorXf attn_norm, ffn_norm;
};

/// The whole network. `output` is a copy of `token_embd` when the file ties the head.
struct Weights {
  Config config;
  lowbit::MatrixXfR token_embd, output;
  Eigen::VectorXf output_norm;
  std::vector<LayerWeights> layers;
  bool tied_output = false;  ///< the file had no output.weight
};

namespace detail {

inline int meta_int(const lowbit::io::GgufFile& f, const std::string& key, int64_t fallback,
                    int64_t lo, int64_t hi) {
  const int64_t v = f.get_int(key, fallback);
  lowbit::detail::require(v >= lo && v <= hi, "gguf: {} = {} is out of range {}..{}", key, v, lo, hi);
  return static_cast<int>(v);
}

inline lowbit::MatrixXfR matrix(const lowbit::io::GgufFile& f, const std::string& name,
                                lowbit::Index rows, lowbit::Index cols) {
  const auto& t = f.tensor(name);
  lowbit::detail::require(t.ne.size() <= 2 && t.rows() == rows && t.cols() == cols,
                          "gguf: tensor '{}': expected [{}][{}] (row-major), got [{}][{}]", name,
                          rows, cols, t.rows(), t.cols());
  lowbit::MatrixXfR m = f.read(t);
  lowbit::detail::require_finite(m, name.c_str());
  return m;
}

inline Eigen::VectorXf vector(const lowbit::io::GgufFile& f, const std::string& name,
                              lowbit::Index n) {
  const lowbit::MatrixXfR m = matrix(f, name, 1, n);
  return Eigen::VectorXf(Eigen::Map<const Eigen::VectorXf>(m.data(), n));
}

}  // namespace detail

/// Hyper-parameters from the metadata of a llama GGUF. `context_length` > 0 overrides
/// llama.context_length (converters often write a context the model was never trained on).
inline Config config_from_gguf(const lowbit::io::GgufFile& f, int context_length = 0) {
  using detail::meta_int;
  const std::string arch = f.get_string("general.architecture", "");
  lowbit::detail::require(arch == "llama", "gguf: general.architecture: expected 'llama', got '{}'",
                          arch);
  constexpr int64_t big = 1 << 20;
  Config c;
  c.dim = meta_int(f, "llama.embedding_length", 0, 1, big);
  c.hidden_dim = meta_int(f, "llama.feed_forward_length", 0, 1, big);
  c.n_layers = meta_int(f, "llama.block_count", 0, 1, 4096);
  c.n_heads = meta_int(f, "llama.attention.head_count", 0, 1, 4096);
  c.n_kv_heads = meta_int(f, "llama.attention.head_count_kv", c.n_heads, 1, c.n_heads);
  lowbit::detail::require(c.n_heads % c.n_kv_heads == 0,
                          "gguf: head_count {} is not a multiple of head_count_kv {}", c.n_heads,
                          c.n_kv_heads);
  c.head_dim = meta_int(f, "llama.attention.key_length", c.dim / c.n_heads, 1, big);
  lowbit::detail::require(meta_int(f, "llama.attention.value_length", c.head_dim, 1, big) == c.head_dim,
                          "gguf: llama.attention.value_length must equal key_length");
  c.rope_dim = meta_int(f, "llama.rope.dimension_count", c.head_dim, 2, c.head_dim);
  lowbit::detail::require(c.rope_dim % 2 == 0, "gguf: llama.rope.dimension_count {} must be even",
                          c.rope_dim);
  int64_t vocab = 0;
  if (const auto* tokens = f.find("tokenizer.ggml.tokens")) vocab = int64_t(tokens->as_array().size());
  c.vocab_size = meta_int(f, "llama.vocab_size", vocab, 1, 1 << 24);
  c.context_length = context_length > 0 ? context_length
                                        : meta_int(f, "llama.context_length", 2048, 1, 1 << 24);
  c.rms_eps = float(f.get_float("llama.attention.layer_norm_rms_epsilon", 1e-5));
  c.rope_base = float(f.get_float("llama.rope.freq_base", 10000.0));
  lowbit::detail::require(std::isfinite(c.rms_eps) && c.rms_eps > 0, "gguf: rms epsilon {} must be > 0",
                          c.rms_eps);
  lowbit::detail::require(std::isfinite(c.rope_base) && c.rope_base > 0,
                          "gguf: rope freq_base {} must be > 0", c.rope_base);
  return c;
}

/// The llama.* metadata describing `c` (config_from_gguf reads it back as `c`), after
/// general.architecture and general.name, for writing a llama GGUF from scratch.
inline lowbit::io::Metadata config_metadata(const Config& c, const std::string& name) {
  using lowbit::io::Value;
  const auto u32 = [](int v) { return Value::of_uint32(uint32_t(v)); };
  return {{"general.architecture", Value::of_string("llama")},
          {"general.name", Value::of_string(name)},
          {"llama.context_length", u32(c.context_length)},
          {"llama.embedding_length", u32(c.dim)},
          {"llama.block_count", u32(c.n_layers)},
          {"llama.feed_forward_length", u32(c.hidden_dim)},
          {"llama.rope.dimension_count", u32(c.rope_dim)},
          {"llama.rope.freq_base", Value::of_float32(c.rope_base)},
          {"llama.attention.head_count", u32(c.n_heads)},
          {"llama.attention.head_count_kv", u32(c.n_kv_heads)},
          {"llama.attention.key_length", u32(c.head_dim)},
          {"llama.attention.value_length", u32(c.head_dim)},
          {"llama.attention.layer_norm_rms_epsilon", Value::of_float32(c.rms_eps)},
          {"llama.vocab_size", u32(c.vocab_size)}};
}

/// All weights of a llama GGUF (F32/F16/BF16 or any block format of lowbit/formats, decoded to
/// float).
inline Weights load_weights(const lowbit::io::GgufFile& f, int context_length = 0) {
  Weights w;
  w.config = config_from_gguf(f, context_length);
  const Config& c = w.config;
  const lowbit::Index q_dim = lowbit::Index(c.n_heads) * c.head_dim;
  const lowbit::Index kv_dim = lowbit::Index(c.n_kv_heads) * c.head_dim;
  w.token_embd = detail::matrix(f, "token_embd.weight", c.vocab_size, c.dim);
  w.output_norm = detail::vector(f, "output_norm.weight", c.dim);
  w.tied_output = f.find_tensor("output.weight") == nullptr;
  w.output = w.tied_output ? w.token_embd : detail::matrix(f, "output.weight", c.vocab_size, c.dim);
  w.layers.resize(size_t(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    auto& L = w.layers[size_t(l)];
    L.wq = detail::matrix(f, p + "attn_q.weight", q_dim, c.dim);
    L.wk = detail::matrix(f, p + "attn_k.weight", kv_dim, c.dim);
    L.wv = detail::matrix(f, p + "attn_v.weight", kv_dim, c.dim);
    L.wo = detail::matrix(f, p + "attn_output.weight", c.dim, q_dim);
    L.w_gate = detail::matrix(f, p + "ffn_gate.weight", c.hidden_dim, c.dim);
    L.w_down = detail::matrix(f, p + "ffn_down.weight", c.dim, c.hidden_dim);
    L.w_up = detail::matrix(f, p + "ffn_up.weight", c.hidden_dim, c.dim);
    L.attn_norm = detail::vector(f, p + "attn_norm.weight", c.dim);
    L.ffn_norm = detail::vector(f, p + "ffn_norm.weight", c.dim);
  }
  return w;
}

/// Opens `gguf_path` and loads its weights (see load_tokenizer() for the tokenizer).
inline Weights load_weights(const std::string& gguf_path, int context_length = 0) {
  return load_weights(lowbit::io::GgufFile::open(gguf_path), context_length);
}

/// Names of the seven Linear layers of a block, in LayerWeights order, as GGUF names them.
inline const std::vector<std::string>& linear_names() {
  static const std::vector<std::string> names = {"attn_q", "attn_k", "attn_v", "attn_output",
                                                 "ffn_gate", "ffn_down", "ffn_up"};
  return names;
}

/// The weight of linear `k` (0..6, linear_names() order) of a layer.
inline lowbit::MatrixXfR& linear_weight(LayerWeights& L, int k) {
  lowbit::MatrixXfR* m[] = {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_down, &L.w_up};
  lowbit::detail::require(k >= 0 && k < 7, "k: expected 0..6, got {}", k);
  return *m[k];
}
inline const lowbit::MatrixXfR& linear_weight(const LayerWeights& L, int k) {
  return linear_weight(const_cast<LayerWeights&>(L), k);
}

}  // namespace llama
