// synthetic.hpp: a seeded, LLM-like stack of linear layers with calibration Gram matrices, for
// demonstrating and testing the allocators without a model file.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/mixed/layer.hpp>
#include <lowbit/mixed/sensitivity.hpp>

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace lowbit::mixed {

/// Shape of the synthetic stack: `blocks` transformer blocks of q, k, v, o, gate, up, down
/// projections (hidden x hidden, kv x hidden, ffn x hidden, hidden x ffn), calibrated on
/// `tokens` random tokens.
struct SyntheticStackOptions {
  int blocks = 2;
  Index hidden = 64;
  Index kv = 32;
  Index ffn = 172;
  Index tokens = 256;
  int sigma_group = 128;  ///< group size sigma2 is measured with (0 = per row)
  uint32_t seed = 1;
};

/// Layers with weights (heavy-tailed, a few outlier input columns in some) and X^T X of their
/// inputs, whose energies differ as in an LLM: hidden states with a few large channels growing
/// with depth, small attention outputs, heavy-tailed MLP activations. alpha and sigma2 are set by
/// describe_layer().
inline std::vector<Layer> synthetic_llm_stack(const SyntheticStackOptions& o = {}) {
  lowbit::detail::require(o.blocks > 0, "options.blocks: expected > 0, got {}", o.blocks);
  lowbit::detail::require(o.hidden > 0 && o.kv > 0 && o.ffn > 0 && o.tokens > 0,
                  "options: expected hidden, kv, ffn, tokens > 0, got {}, {}, {}, {}", o.hidden,
                  o.kv, o.ffn, o.tokens);
  lowbit::detail::require(o.sigma_group >= 0, "options.sigma_group: expected >= 0, got {}", o.sigma_group);
  std::mt19937 rng(o.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::student_t_distribution<float> heavy(3.0f);
  std::uniform_int_distribution<int> coin(0, 15);

  const auto weight = [&](Index rows, Index cols, float scale, bool outlier_cols) {
    MatrixXfR w(rows, cols);
    const float s = scale / std::sqrt(float(cols));
    for (Index i = 0; i < w.size(); ++i) w.data()[i] = s * heavy(rng);
    if (outlier_cols)
      for (Index c = 0; c < cols; ++c)
        if (coin(rng) == 0) w.col(c) *= 4.0f;
    return w;
  };
  const auto activations = [&](Index cols, float scale, bool outlier_channels, bool heavy_tail) {
    MatrixXfR x(o.tokens, cols);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = scale * (heavy_tail ? heavy(rng) : normal(rng));
    if (outlier_channels)
      for (Index c = 0; c < cols; c += 17) x.col(c) *= 8.0f;
    return x;
  };
  const Scheme sigma_scheme = o.sigma_group > 0 ? Scheme::per_group(8, o.sigma_group)
                                                : Scheme::per_channel(8);
  std::vector<Layer> layers;
  const auto add = [&](const std::string& name, const MatrixXfR& w, const MatrixXfR& x) {
    layers.push_back(describe_layer(name, w, gram_of(x), 1.0f, sigma_scheme));
  };
  for (int b = 0; b < o.blocks; ++b) {
    const float depth = 1.0f + 0.75f * float(b);
    const std::string p = fmt::format("b{}.", b);
    const MatrixXfR hidden = activations(o.hidden, depth, true, false);
    add(p + "q", weight(o.hidden, o.hidden, 1.0f, false), hidden);
    add(p + "k", weight(o.kv, o.hidden, 1.0f, false), hidden);
    add(p + "v", weight(o.kv, o.hidden, 0.5f, true), hidden);
    add(p + "o", weight(o.hidden, o.hidden, 0.5f, true), activations(o.hidden, 0.3f, false, false));
    const MatrixXfR normed = activations(o.hidden, 1.0f, true, false);
    add(p + "gate", weight(o.ffn, o.hidden, 1.0f, false), normed);
    add(p + "up", weight(o.ffn, o.hidden, 1.0f, false), normed);
    add(p + "down", weight(o.hidden, o.ffn, 1.0f, true), activations(o.ffn, 0.5f * depth, false, true));
  }
  return layers;
}

}  // namespace lowbit::mixed
