// fisher.hpp: the diagonal empirical Fisher of every Linear's output (and of the embedding's),
// from the training backward: how much a unit of error in each output raises the loss.
#pragma once

#include "train.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace llama::train {

/// Diagonal empirical Fisher of every Linear's output: per output channel, the mean over tokens
/// of the squared gradient of the next-token loss with respect to that output, from the training
/// backward on `sequences` (up to `max_tokens`); keyed "blk.N.attn_q", ..., "output", and
/// "token_embd" for the embedding's output (the gradient at the residual stream's start). It
/// converts a layer's output error into loss: ΔL ≈ ½ Σ_t Σ_r fisher_r · Δy_tr².
inline std::map<std::string, Eigen::VectorXd> output_fisher(
    const llama::Weights& w, const std::vector<std::vector<int>>& sequences, long max_tokens) {
  using namespace llama::train;
  const Params<float> p = from_weights<float>(w);
  Params<float> g = zeros_like(p);
  std::map<std::string, Eigen::VectorXd> f;
  long tokens = 0;
  for (const auto& s : sequences) {
    if (tokens >= max_tokens) break;
    if (s.size() < 2) continue;
    accumulate_gradient(p, s, nullptr, LossOptions{1.0, 0.0}, 1.0f, g,
                        [&](const std::string& name, const Mat<float>& dy) {
                          const Eigen::VectorXd sq =
                              dy.cast<double>().colwise().squaredNorm().transpose();
                          auto it = f.find(name);
                          if (it == f.end())
                            f.emplace(name, sq);
                          else
                            it->second += sq;
                        });
    tokens += long(s.size());
  }
  for (auto& [name, v] : f) v /= double(std::max(tokens, 1L));
  return f;
}

}  // namespace llama::train
