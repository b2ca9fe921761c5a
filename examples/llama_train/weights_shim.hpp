// weights_shim.hpp: temporary copy of the engine's llama::Config/Weights until model.hpp lands.
#pragma once

#include <lowbit/core/types.hpp>

#include <Eigen/Core>
#include <vector>

namespace llama {

struct Config {
  int dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size, context_length;
  float rms_eps = 1e-5f, rope_base = 10000.f;
};

struct LayerWeights {
  lowbit::MatrixXfR wq, wk, wv, wo, w_gate, w_down, w_up;
  Eigen::VectorXf attn_norm, ffn_norm;
};

struct Weights {
  Config config;
  lowbit::MatrixXfR token_embd, output;
  Eigen::VectorXf output_norm;
  std::vector<LayerWeights> layers;
};

}  // namespace llama
