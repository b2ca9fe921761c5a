// stream.hpp: a llama block run over many token sequences at once (their hidden states packed row
// after row), split into the stages a quantizer calibrates between: the same arithmetic as
// Model::forward (engine.hpp), so calibration and evaluation see exactly the engine's activations.
#pragma once

#include "model.hpp"

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <vector>

namespace llama {

using lowbit::Index;
using lowbit::MatrixXfR;

/// x·Wᵀ for float weights W [out, in].
inline MatrixXfR times(const Eigen::Ref<const MatrixXfR>& x, const MatrixXfR& w) { return x * w.transpose(); }
/// x·Wᵀ on a Linear backend (as Model runs it).
inline MatrixXfR times(const Eigen::Ref<const MatrixXfR>& x, const std::shared_ptr<const Linear>& w) {
  return w->forward(MatrixXfR(x));
}
/// y += x·Wᵀ: one fused product for float weights; the backend's output added, as Model adds it.
inline void add_times(Eigen::Ref<MatrixXfR> y, const Eigen::Ref<const MatrixXfR>& x, const MatrixXfR& w) {
  y.noalias() += x * w.transpose();
}
inline void add_times(Eigen::Ref<MatrixXfR> y, const Eigen::Ref<const MatrixXfR>& x,
                      const std::shared_ptr<const Linear>& w) {
  y += times(x, w);
}

/// One block as backends run it: its norms and seven Linears (LayerWeights' names), e.g. the
/// tensors of a file as stored. The stages below take it or LayerWeights alike.
struct BlockLinears {
  Eigen::VectorXf attn_norm, ffn_norm;
  std::shared_ptr<const Linear> wq, wk, wv, wo, w_gate, w_down, w_up;
};

/// Hidden states of several sequences, row after row: sequence s is rows [offsets[s],
/// offsets[s+1]), its first row at position 0.
struct Packed {
  MatrixXfR x;                 ///< [tokens, dim]
  std::vector<Index> offsets;  ///< sequence starts, then the total (offsets.back() == x.rows())

  Index sequences() const { return offsets.empty() ? 0 : Index(offsets.size()) - 1; }
  Index tokens() const { return offsets.empty() ? 0 : offsets.back(); }
};

/// Sequence offsets of `seqs` (each a token sequence).
inline std::vector<Index> offsets_of(const std::vector<std::vector<int>>& seqs) {
  std::vector<Index> o{0};
  for (const auto& s : seqs) o.push_back(o.back() + Index(s.size()));
  return o;
}

/// RMSNorm of every row, as Model: x·gain / sqrt(mean(x²) + eps).
inline MatrixXfR rms_norm_rows(const Eigen::Ref<const MatrixXfR>& x, const Eigen::VectorXf& gain,
                               float eps) {
  MatrixXfR y(x.rows(), x.cols());
  for (Index i = 0; i < x.rows(); ++i) {
    const float ms = x.row(i).squaredNorm() / float(x.cols());
    y.row(i) = x.row(i).cwiseProduct(gain.transpose()) / std::sqrt(ms + eps);
  }
  return y;
}

/// RoPE (adjacent pairs, llama.cpp's NORM) of rows [r0, r1) of m, the first at position 0.
inline void rope_rows(MatrixXfR& m, Index r0, Index r1, const Config& c) {
  const int hd = c.head_dim, nr = c.rope_dim;
  const Index heads = m.cols() / hd;
  for (Index i = r0; i < r1; ++i) {
    const double pos = double(i - r0);
    for (int j = 0; j < nr / 2; ++j) {
      const double theta = pos * std::pow(double(c.rope_base), -2.0 * j / nr);
      const float cs = float(std::cos(theta)), sn = float(std::sin(theta));
      for (Index h = 0; h < heads; ++h) {
        float* p = &m(i, h * hd + 2 * j);
        const float a = p[0], b = p[1];
        p[0] = a * cs - b * sn;
        p[1] = a * sn + b * cs;
      }
    }
  }
}

/// Causal grouped-query attention of rows [r0, r1) (one sequence) of q, k, v (RoPE applied):
/// writes the heads' outputs to the same rows of `att`.
inline void attention_rows(const MatrixXfR& q, const MatrixXfR& k, const MatrixXfR& v, Index r0,
                           Index r1, const Config& c, MatrixXfR& att) {
  const Index T = r1 - r0, hd = c.head_dim;
  const int group = c.n_heads / c.n_kv_heads;
  const float inv_sqrt = 1.0f / std::sqrt(float(hd));
  MatrixXfR s(T, T);
  for (int head = 0; head < c.n_heads; ++head) {
    const Index kvh = Index(head / group) * hd;
    s.noalias() = q.block(r0, Index(head) * hd, T, hd) * k.block(r0, kvh, T, hd).transpose();
    for (Index i = 0; i < T; ++i) {
      const Index n = i + 1;
      auto row = s.row(i).head(n);
      row *= inv_sqrt;
      const float mx = row.maxCoeff();
      row = (row.array() - mx).exp();
      row /= row.sum();
      s.row(i).tail(T - n).setZero();
    }
    att.block(r0, Index(head) * hd, T, hd).noalias() = s * v.block(r0, kvh, T, hd);
  }
}

/// Groups of whole sequences holding about `rows` tokens each (at least one sequence): the unit
/// the stages run their matrix products on. Returns sequence indices [g_k, g_{k+1}).
inline std::vector<Index> sequence_groups(const std::vector<Index>& offsets, Index rows = 2048) {
  std::vector<Index> g{0};
  const Index n = Index(offsets.size()) - 1;
  for (Index s = 0; s < n; ++s)
    if (offsets[size_t(s + 1)] - offsets[size_t(g.back())] >= rows || s + 1 == n) g.push_back(s + 1);
  if (n == 0) g.push_back(0);
  return g;
}

/// The attention output (before attn_output) of every row of `x` (hidden states of the sequences
/// at `offsets`): RMSNorm by `attn_norm`, q/k/v by the given weights, RoPE, causal attention;
/// [tokens, n_heads·head_dim]. Works on groups of whole sequences (sequence_groups).
template <class W>
MatrixXfR attention_input(const MatrixXfR& x, const Eigen::VectorXf& attn_norm, const std::vector<Index>& offsets,
                          const W& wq, const W& wk, const W& wv, const Config& c) {
  MatrixXfR att(x.rows(), Index(c.n_heads) * c.head_dim);
  const auto groups = sequence_groups(offsets);
  for (size_t g = 0; g + 1 < groups.size(); ++g) {
    const Index s0 = groups[g], s1 = groups[g + 1];
    const Index r0 = offsets[size_t(s0)], r1 = offsets[size_t(s1)];
    if (r1 == r0) continue;
    const MatrixXfR hg = rms_norm_rows(x.middleRows(r0, r1 - r0), attn_norm, c.rms_eps);
    MatrixXfR q = times(hg, wq), k = times(hg, wk), v = times(hg, wv);
    MatrixXfR a(r1 - r0, att.cols());
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (Index s = s0; s < s1; ++s) {
      const Index a0 = offsets[size_t(s)] - r0, a1 = offsets[size_t(s + 1)] - r0;
      rope_rows(q, a0, a1, c);
      rope_rows(k, a0, a1, c);
      attention_rows(q, k, v, a0, a1, c, a);
    }
    att.middleRows(r0, r1 - r0) = a;
  }
  return att;
}

/// SiLU(h·Wgᵀ) ⊙ (h·Wuᵀ), the ffn_down input of rows h (ffn_norm outputs), as Model.
template <class W>
MatrixXfR ffn_input(const Eigen::Ref<const MatrixXfR>& h, const W& w_gate, const W& w_up) {
  MatrixXfR g = times(h, w_gate);
  const MatrixXfR u = times(h, w_up);
  g = (g.array() / (1.0f + (-g.array()).exp())) * u.array();
  return g;
}

/// Calls fn(r0, r1) over consecutive row ranges of at most `rows` rows covering [0, n).
inline void for_row_chunks(Index n, Index rows, const std::function<void(Index, Index)>& fn) {
  for (Index r0 = 0; r0 < n; r0 += rows) fn(r0, std::min(n, r0 + rows));
}

/// One whole block on P (x ← x + attention, then x ← x + FFN): the forward pass of Model for
/// these sequences (L: LayerWeights or BlockLinears).
template <class Block>
void block_forward(Packed& P, const Block& L, const Config& c) {
  const MatrixXfR att = attention_input(P.x, L.attn_norm, P.offsets, L.wq, L.wk, L.wv, c);
  for_row_chunks(P.x.rows(), 4096, [&](Index r0, Index r1) {
    add_times(P.x.middleRows(r0, r1 - r0), att.middleRows(r0, r1 - r0), L.wo);
  });
  for_row_chunks(P.x.rows(), 2048, [&](Index r0, Index r1) {
    const MatrixXfR h2 = rms_norm_rows(P.x.middleRows(r0, r1 - r0), L.ffn_norm, c.rms_eps);
    const MatrixXfR m = ffn_input(h2, L.w_gate, L.w_up);
    add_times(P.x.middleRows(r0, r1 - r0), m, L.w_down);
  });
}

}  // namespace llama
