// tiny_llama.hpp: a tiny random Llama (dim 16, 2 layers, 4/2 heads, vocab 32) for tests; a wide one for GGUF blocks.
#pragma once

#include "../../examples/llama/model.hpp"
#include "../../examples/llama_train/train.hpp"

#include <cmath>
#include <random>
#include <string>

namespace tiny {

using llama::train::Index;
using llama::train::Mat;
using llama::train::Vec;

template <class T>
Mat<T> random_mat(Index r, Index c, std::mt19937& rng, double sd = 1.0) {
  std::normal_distribution<double> n(0.0, sd);
  Mat<T> m(r, c);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = T(n(rng));
  return m;
}

template <class T>
Vec<T> random_vec(Index n, std::mt19937& rng, double mean, double sd) {
  std::normal_distribution<double> d(mean, sd);
  Vec<T> v(n);
  for (Index i = 0; i < n; ++i) v(i) = T(d(rng));
  return v;
}

inline llama::Config config() {
  llama::Config c{};
  c.dim = 16;
  c.hidden_dim = 24;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.vocab_size = 32;
  c.context_length = 16;
  c.rope_dim = 4;
  return c;
}

/// A wider config whose rows fit GGUF blocks: dim `dim` (q/k/v/gate/up/head rows), FFN width
/// `hidden` (FFN-down rows), 4 query and 2 KV heads, vocab 32. E.g. (64, 48): rows of 64 fit
/// 32-weight blocks and FFN-down's 48 fit none; (256, 512): every row fits the K-quants' 256.
inline llama::Config wide_config(int dim, int hidden) {
  llama::Config c = config();
  c.dim = dim;
  c.hidden_dim = hidden;
  c.head_dim = dim / c.n_heads;
  c.rope_dim = c.head_dim;
  return c;
}

/// Random weights of `c` (config() by default); the head is the embedding when `tied`.
template <class T>
llama::train::Params<T> params(bool tied, std::mt19937& rng, const llama::Config& c = config()) {
  llama::train::Params<T> p;
  p.config = c;
  p.tied = tied;
  p.token_embd = random_mat<T>(c.vocab_size, c.dim, rng, 0.5);
  if (!tied) p.output = random_mat<T>(c.vocab_size, c.dim, rng, 0.3);
  p.output_norm = random_vec<T>(c.dim, rng, 1.0, 0.3);
  const double s = 1.0 / std::sqrt(double(c.dim));
  const Index kv = Index(c.n_kv_heads) * c.head_dim;
  for (int l = 0; l < c.n_layers; ++l)
    p.layers.push_back({random_mat<T>(c.dim, c.dim, rng, s), random_mat<T>(kv, c.dim, rng, s),
                        random_mat<T>(kv, c.dim, rng, s), random_mat<T>(c.dim, c.dim, rng, s),
                        random_mat<T>(c.hidden_dim, c.dim, rng, s),
                        random_mat<T>(c.dim, c.hidden_dim, rng, 1.0 / std::sqrt(double(c.hidden_dim))),
                        random_mat<T>(c.hidden_dim, c.dim, rng, s),
                        random_vec<T>(c.dim, rng, 1.0, 0.3), random_vec<T>(c.dim, rng, 1.0, 0.3)});
  return p;
}

/// The llama.* metadata of `c` that a source GGUF carries (no tokenizer), named "synthetic".
inline lowbit::io::Metadata metadata(const llama::Config& c) {
  return llama::config_metadata(c, "synthetic");
}

}  // namespace tiny
