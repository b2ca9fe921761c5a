// rotate.hpp: folds the RMSNorm gains into the Linears and rotates the residual stream (and each
// head's value/output pair) by orthogonal matrices: the same function, still a plain llama model.
#pragma once

#include "model.hpp"

#include <lowbit/core/error.hpp>
#include <lowbit/io/gguf.hpp>
#include <lowbit/ptq/fold.hpp>
#include <lowbit/ptq/rotation.hpp>
#include <lowbit/ptq/seeded_random.hpp>

#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace llama {

/// What rotate_model() does. Without any option set it returns the weights unchanged.
struct RotateOptions {
  /// Multiply each RMSNorm gain into the Linears reading its output (q/k/v, gate/up, the head);
  /// the gains become ones. Required by `residual` (a rotation commutes with RMSNorm only when
  /// the gain is 1: RMSNorm(x·Q) = RMSNorm(x)·Q since ‖x·Q‖ = ‖x‖).
  bool fold_norms = true;
  /// Rotate the residual stream by one orthogonal Q of size dim: token embedding E·Q, the Linears
  /// reading the stream (q/k/v, gate/up, head) W·Q, those writing it (attn_output, ffn_down) Qᵀ·W.
  bool residual = true;
  /// Rotate each attention head's values by its own orthogonal P (head_dim): attn_v's rows of KV
  /// head j become P_jᵀ·W, attn_output's columns of every query head reading it W·P_j.
  bool heads = false;
  /// Matrix of the residual rotation; nullopt: the randomized Hadamard where dim has one, else
  /// the random orthogonal.
  std::optional<lowbit::ptq::RotationKind> kind;
  /// Matrix of the per-head rotations (same rule on head_dim).
  std::optional<lowbit::ptq::RotationKind> head_kind;
  /// The residual Q is made from `seed`; head j of layer l from derive_seed(seed, 1 + l·n_kv_heads + j).
  uint64_t seed = 0;
};

/// What was done, as recorded in a GGUF (keys lowbit.rotation.*) and in reports.
struct RotationRecord {
  bool norms_folded = false;
  std::string residual = "none";  ///< kind of the residual rotation: hadamard, random_orthogonal, none
  std::string heads = "none";     ///< kind of the per-head value/output rotations, or none
  uint64_t seed = 0;
  bool head_untied = false;  ///< a tied head became its own tensor (output.weight)

  bool rotated() const { return residual != "none" || heads != "none"; }
  bool identity() const { return !norms_folded && !rotated(); }

  /// "fold", "fold+hadamard(seed 7)", "fold+hadamard+heads:hadamard(seed 7)", "none".
  std::string describe() const {
    if (identity()) return "none";
    std::string s = norms_folded ? "fold" : "";
    const auto add = [&](const std::string& part) { s += (s.empty() ? "" : "+") + part; };
    if (residual != "none") add(residual);
    if (heads != "none") add("heads:" + heads);
    if (rotated()) s += "(seed " + std::to_string(seed) + ")";
    return s;
  }

  /// The GGUF metadata: lowbit.rotation.norms_folded (bool), .kind (string), .heads (string),
  /// .seed (uint64), .head_untied (bool).
  std::vector<std::pair<std::string, lowbit::io::Value>> metadata() const {
    using lowbit::io::Value;
    return {{"lowbit.rotation.norms_folded", Value::of_bool(norms_folded)},
            {"lowbit.rotation.kind", Value::of_string(residual)},
            {"lowbit.rotation.heads", Value::of_string(heads)},
            {"lowbit.rotation.seed", Value::of_uint64(seed)},
            {"lowbit.rotation.head_untied", Value::of_bool(head_untied)}};
  }

  /// The record a GGUF carries, or nullopt when it has no lowbit.rotation.kind.
  static std::optional<RotationRecord> from_gguf(const lowbit::io::GgufFile& f) {
    if (f.find("lowbit.rotation.kind") == nullptr) return std::nullopt;
    RotationRecord r;
    r.residual = f.get_string("lowbit.rotation.kind", "none");
    r.heads = f.get_string("lowbit.rotation.heads", "none");
    if (const auto* v = f.find("lowbit.rotation.norms_folded")) r.norms_folded = v->as_bool();
    if (const auto* v = f.find("lowbit.rotation.head_untied")) r.head_untied = v->as_bool();
    if (const auto* v = f.find("lowbit.rotation.seed")) {
      lowbit::detail::require(v->type == lowbit::io::ValueType::UInt64,
                              "gguf: lowbit.rotation.seed must be uint64");
      r.seed = v->u;
    }
    return r;
  }
};

/// The transformed weights and the record of what was done.
struct RotatedModel {
  Weights weights;
  RotationRecord record;
};

/// One block with its RMSNorm gains multiplied into the Linears that read their output (q/k/v
/// after attn_norm, gate/up after ffn_norm) and the gains set to 1 (fold_norms, block by block).
inline void fold_layer_norms(LayerWeights& L) {
  using lowbit::ptq::scale_columns;
  L.wq = scale_columns(L.wq, L.attn_norm);
  L.wk = scale_columns(L.wk, L.attn_norm);
  L.wv = scale_columns(L.wv, L.attn_norm);
  L.w_gate = scale_columns(L.w_gate, L.ffn_norm);
  L.w_up = scale_columns(L.w_up, L.ffn_norm);
  L.attn_norm.setOnes();
  L.ffn_norm.setOnes();
}

/// The weights with every RMSNorm gain multiplied into the Linears that read its output (q/k/v
/// after attn_norm, gate/up after ffn_norm, the head after output_norm) and the gains set to 1:
/// the same function up to fp32 rounding (one rounding per weight). A tied head becomes its own
/// tensor unless output_norm is already all ones.
inline Weights fold_norms(const Weights& w) {
  using lowbit::ptq::scale_columns;
  Weights out = w;
  for (auto& L : out.layers) fold_layer_norms(L);
  out.output = scale_columns(out.output, out.output_norm);
  out.output_norm.setOnes();
  out.tied_output = w.tied_output && out.output == out.token_embd;
  return out;
}

namespace detail {

inline lowbit::ptq::Rotation make_rotation(const std::optional<lowbit::ptq::RotationKind>& kind,
                                           lowbit::Index n, uint64_t seed) {
  return kind ? lowbit::ptq::Rotation::make(*kind, n, seed) : lowbit::ptq::Rotation::automatic(n, seed);
}

inline void check_shapes(const Weights& w) {
  const Config& c = w.config;
  const lowbit::Index D = c.dim, qd = lowbit::Index(c.n_heads) * c.head_dim,
                      kv = lowbit::Index(c.n_kv_heads) * c.head_dim;
  const auto req = [](const lowbit::MatrixXfR& m, lowbit::Index r, lowbit::Index cols, const char* name) {
    lowbit::detail::require(m.rows() == r && m.cols() == cols, "weights.{}: expected [{}][{}], got [{}][{}]",
                            name, r, cols, m.rows(), m.cols());
  };
  lowbit::detail::require(c.dim > 0 && c.n_heads > 0 && c.n_kv_heads > 0 && c.head_dim > 0 &&
                              c.n_heads % c.n_kv_heads == 0,
                          "weights.config: inconsistent dims (dim {}, heads {}/{}, head_dim {})", c.dim,
                          c.n_heads, c.n_kv_heads, c.head_dim);
  req(w.token_embd, c.vocab_size, D, "token_embd");
  req(w.output, c.vocab_size, D, "output");
  lowbit::detail::require(w.output_norm.size() == D, "weights.output_norm: expected {} entries", D);
  lowbit::detail::require(int(w.layers.size()) == c.n_layers, "weights.layers: expected {}, got {}",
                          c.n_layers, w.layers.size());
  const auto finite = [](const auto& m, const char* name) {
    lowbit::detail::require(m.allFinite(), "weights.{}: expected finite values", name);
  };
  finite(w.token_embd, "token_embd");
  finite(w.output, "output");
  finite(w.output_norm, "output_norm");
  for (const auto& L : w.layers) {
    finite(L.wq, "wq"), finite(L.wk, "wk"), finite(L.wv, "wv"), finite(L.wo, "wo");
    finite(L.w_gate, "w_gate"), finite(L.w_up, "w_up"), finite(L.w_down, "w_down");
    finite(L.attn_norm, "attn_norm"), finite(L.ffn_norm, "ffn_norm");
  }
  for (const auto& L : w.layers) {
    req(L.wq, qd, D, "wq");
    req(L.wk, kv, D, "wk");
    req(L.wv, kv, D, "wv");
    req(L.wo, D, qd, "wo");
    req(L.w_gate, c.hidden_dim, D, "w_gate");
    req(L.w_up, c.hidden_dim, D, "w_up");
    req(L.w_down, D, c.hidden_dim, "w_down");
    lowbit::detail::require(L.attn_norm.size() == D && L.ffn_norm.size() == D,
                            "weights.layers: norm gains of {} entries expected", D);
  }
}

}  // namespace detail

/// The residual-stream rotation of `opt` for a model of config `c` (size dim, from opt.seed).
inline lowbit::ptq::Rotation residual_rotation(const Config& c, const RotateOptions& opt) {
  return detail::make_rotation(opt.kind, c.dim, opt.seed);
}

/// Rotates block `l` (norms already folded when `q` is given): with the residual rotation `q`,
/// q/k/v and gate/up become W·Q, attn_output and ffn_down Qᵀ·W; with opt.heads, KV head j gets
/// P_j (seed derive_seed(opt.seed, 1 + l·n_kv_heads + j)): attn_v's rows of the head P_jᵀ·W and
/// attn_output's columns of every query head reading it W·P_j. `record.heads` is set. This is
/// rotate_model's step for one block, for callers that hold one block at a time.
inline void rotate_layer(const Config& c, LayerWeights& L, int l, const RotateOptions& opt,
                         const lowbit::ptq::Rotation* q, RotationRecord& record) {
  using lowbit::ptq::rotate_input;
  using lowbit::ptq::rotate_output;
  if (q != nullptr) {
    for (auto* m : {&L.wq, &L.wk, &L.wv, &L.w_gate, &L.w_up}) *m = rotate_input(*m, *q);
    L.wo = rotate_output(L.wo, *q);
    L.w_down = rotate_output(L.w_down, *q);
  }
  if (opt.heads) {
    const int group = c.n_heads / c.n_kv_heads;
    std::vector<lowbit::ptq::Rotation> kv_heads, q_heads;
    for (int j = 0; j < c.n_kv_heads; ++j)
      kv_heads.push_back(detail::make_rotation(
          opt.head_kind, c.head_dim,
          lowbit::ptq::derive_seed(opt.seed, 1 + uint64_t(l) * uint64_t(c.n_kv_heads) + uint64_t(j))));
    for (int h = 0; h < c.n_heads; ++h) q_heads.push_back(kv_heads[size_t(h / group)]);
    record.heads = std::string(lowbit::ptq::to_string(kv_heads.front().kind()));
    L.wv = rotate_output(L.wv, kv_heads);  // values v·P_j
    L.wo = rotate_input(L.wo, q_heads);    // attention output of head h is read through P_{h/group}
  }
}

/// Folds the norms and applies the rotations of `opt` (see RotateOptions): the result computes
/// the same logits up to fp32 rounding, keeps the llama tensor names and shapes (a tied head
/// becomes output.weight when it changes) and says what was done. Every matrix product is done
/// in double and rounded to float once. Throws lowbit::Error for inconsistent weights, non-finite
/// values, `residual` without `fold_norms`, or a forced Hadamard kind the width lacks.
inline RotatedModel rotate_model(const Weights& w, const RotateOptions& opt) {
  using lowbit::ptq::rotate_input;
  detail::check_shapes(w);
  lowbit::detail::require(!opt.residual || opt.fold_norms,
                          "options.residual: rotating the residual stream needs fold_norms (RMSNorm "
                          "gains do not commute with a rotation)");
  RotatedModel r{opt.fold_norms ? fold_norms(w) : w, {}};
  Weights& out = r.weights;
  r.record.norms_folded = opt.fold_norms;
  r.record.seed = opt.seed;
  const Config& c = w.config;
  std::optional<lowbit::ptq::Rotation> q;
  if (opt.residual) {
    q = residual_rotation(c, opt);
    r.record.residual = std::string(lowbit::ptq::to_string(q->kind()));
    out.token_embd = rotate_input(out.token_embd, *q);
    out.output = rotate_input(out.output, *q);
  }
  for (int l = 0; l < c.n_layers; ++l)
    rotate_layer(c, out.layers[size_t(l)], l, opt, q ? &*q : nullptr, r.record);
  out.tied_output = w.tied_output && out.output == out.token_embd;
  r.record.head_untied = w.tied_output && !out.tied_output;
  return r;
}

/// The GGUF tensors of a llama model (F32, llama.cpp's names; output.weight only when untied).
inline std::vector<lowbit::io::TensorF32> gguf_tensors(const Weights& w) {
  using lowbit::io::TensorF32;
  std::vector<TensorF32> t = {TensorF32::from_matrix("token_embd.weight", w.token_embd),
                              TensorF32::from_vector("output_norm.weight", w.output_norm)};
  if (!w.tied_output) t.push_back(TensorF32::from_matrix("output.weight", w.output));
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const auto& L = w.layers[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    t.push_back(TensorF32::from_vector(p + "attn_norm.weight", L.attn_norm));
    for (int k = 0; k < 7; ++k)
      t.push_back(TensorF32::from_matrix(p + linear_names()[size_t(k)] + ".weight", linear_weight(L, k)));
    t.push_back(TensorF32::from_vector(p + "ffn_norm.weight", L.ffn_norm));
  }
  return t;
}

/// `base` with every key of `extra` set (replaced in place, or appended in extra's order).
inline std::vector<std::pair<std::string, lowbit::io::Value>> merge_metadata(
    std::vector<std::pair<std::string, lowbit::io::Value>> base,
    const std::vector<std::pair<std::string, lowbit::io::Value>>& extra) {
  for (const auto& [key, value] : extra) {
    bool found = false;
    for (auto& kv : base)
      if (kv.first == key) {
        kv.second = value;
        found = true;
      }
    if (!found) base.emplace_back(key, value);
  }
  return base;
}

/// A GGUF v3 (F32) of `w` with `metadata` (normally the source file's: architecture, hyper-
/// parameters, tokenizer) and the record's lowbit.rotation.* keys.
inline std::vector<uint8_t> serialize_model(const Weights& w,
                                            const std::vector<std::pair<std::string, lowbit::io::Value>>& metadata,
                                            const RotationRecord& record) {
  detail::check_shapes(w);
  const auto meta = merge_metadata(metadata, record.metadata());
  uint32_t alignment = lowbit::io::kDefaultAlignment;
  for (const auto& [key, v] : meta)
    if (key == "general.alignment") alignment = uint32_t(v.u);
  return lowbit::io::serialize_gguf(meta, gguf_tensors(w), alignment);
}

/// Writes serialize_model(...) to `path` through a temporary file renamed into place.
inline void write_model(const std::string& path, const Weights& w,
                        const std::vector<std::pair<std::string, lowbit::io::Value>>& metadata,
                        const RotationRecord& record) {
  const auto bytes = serialize_model(w, metadata, record);
  const std::string tmp = path + ".tmp";
  {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    lowbit::detail::require(f != nullptr, "path: cannot create '{}'", tmp);
    const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
    const bool closed = std::fclose(f) == 0;
    if (!ok || !closed) {
      std::remove(tmp.c_str());
      lowbit::detail::fail("path: cannot write '{}'", tmp);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    lowbit::detail::fail("path: cannot rename '{}' to '{}'", tmp, path);
  }
}

}  // namespace llama
