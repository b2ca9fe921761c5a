// gguf_model.hpp: a llama GGUF with any mix of F32/F16/BF16 and GGUF block tensors, run on lowbit's block kernels.
#pragma once

#include "engine.hpp"
#include "model.hpp"

#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/formats/format.hpp>
#include <lowbit/gemm/activation_quant.hpp>
#include <lowbit/gemm/gguf_weights.hpp>
#include <lowbit/gemm/linear.hpp>
#include <lowbit/io/gguf.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace llama {

/// How load_model runs a file.
struct GgufRunOptions {
  int context_length = 0;  ///< > 0 overrides llama.context_length (see config_from_gguf)
  /// Activations of the Linears on block tensors: int8 (W·A8, integer dot products, the default)
  /// or float32 (weight-only). F32/F16/BF16 tensors always run as Fp32Linear.
  lowbit::ActivationQuant activations = lowbit::ActivationQuant::int8;
};

/// A Linear on one GGUF block tensor as the file stores it: lowbit::pack_weights(type, bytes)
/// once, then lowbit::linear (the format's own block kernels, never expanded to float).
class BlockLinear final : public Linear {
 public:
  /// `rows` x `cols` weights of `type` at `blocks` (only read: e.g. inside the file's map).
  BlockLinear(lowbit::formats::Type type, const uint8_t* blocks, Index rows, Index cols,
              lowbit::ActivationQuant activations)
      : packed_(lowbit::pack_weights(type, blocks, rows, cols)), type_(type),
        bytes_(size_t(rows) * size_t(lowbit::formats::row_bytes(type, uint64_t(cols)))) {
    lowbit::detail::require(activations == lowbit::ActivationQuant::int8 ||
                                activations == lowbit::ActivationQuant::uint8 ||
                                activations == lowbit::ActivationQuant::int8_per_group ||
                                activations == lowbit::ActivationQuant::float32,
                            "activations: not an ActivationQuant value");
    opt_.activations = activations;
  }
  MatrixXfR forward(const MatrixXfR& x) const override { return lowbit::linear(x, packed_, opt_); }
  Index out_features() const override { return packed_.rows(); }
  Index in_features() const override { return packed_.cols(); }
  /// The bytes the file stores for the tensor (rows x row_bytes(type, cols)).
  size_t bytes() const override { return bytes_; }
  lowbit::formats::Type type() const { return type_; }
  lowbit::ActivationQuant activations() const { return opt_.activations; }
  const lowbit::PackedWeights& packed() const { return packed_; }

 private:
  lowbit::PackedWeights packed_;
  lowbit::formats::Type type_;
  size_t bytes_ = 0;
  lowbit::LinearOptions opt_;
};

namespace detail {

inline bool is_plain(lowbit::formats::Type t) {
  using lowbit::formats::Type;
  return t == Type::F32 || t == Type::F16 || t == Type::BF16;
}

/// Tensor `name` of `f`, checked to be [rows][cols] (row-major, at most 2 dims).
inline const lowbit::io::TensorInfo& tensor_of(const lowbit::io::GgufFile& f, const std::string& name, Index rows,
                                               Index cols) {
  const auto& t = f.tensor(name);
  lowbit::detail::require(t.ne.size() <= 2 && t.rows() == rows && t.cols() == cols,
                          "gguf: tensor '{}': expected [{}][{}] (row-major), got [{}][{}]", name, rows, cols,
                          t.rows(), t.cols());
  return t;
}

/// A F32/F16/BF16 tensor as floats (formats::decode_row: exact), checked finite.
inline MatrixXfR plain_matrix(const lowbit::io::GgufFile& f, const lowbit::io::TensorInfo& t) {
  MatrixXfR m(t.rows(), t.cols());
  lowbit::formats::decode_row(t.type, f.tensor_data(t), m.size(), m.data());
  lowbit::detail::require_finite(m, t.name.c_str());
  return m;
}

/// "F32, F16, BF16, Q8_0, ..., Q6_K": what load_model runs.
inline std::string runnable_types() { return "F32, F16, BF16, " + lowbit::detail::block_kernel_type_list(); }

}  // namespace detail

/// True when some tensor of `f` has a GGUF block type (quantized: Q8_0, Q4_K, IQ4_NL, ...).
inline bool has_block_tensors(const lowbit::io::GgufFile& f) {
  for (const auto& t : f.tensors())
    if (lowbit::formats::info(t.type).quantized) return true;
  return false;
}

/// The Linear of GGUF tensor `name`, expected [rows][cols]: a BlockLinear over the file's bytes
/// for Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K; an Fp32Linear of the exact
/// values for F32/F16/BF16 (bytes() = the stored bytes). Throws lowbit::Error naming the tensor for
/// any other type (naming the supported ones), a wrong shape, non-finite values or block scales.
inline std::shared_ptr<const Linear> gguf_linear(const lowbit::io::GgufFile& f, const std::string& name, Index rows,
                                                 Index cols, lowbit::ActivationQuant activations) {
  const auto& t = detail::tensor_of(f, name, rows, cols);
  if (detail::is_plain(t.type)) return std::make_shared<Fp32Linear>(detail::plain_matrix(f, t), size_t(t.n_bytes));
  lowbit::detail::require(lowbit::has_block_kernels(t.type),
                          "gguf: tensor '{}': type {} does not run on lowbit's kernels; supported: {}", name,
                          lowbit::formats::to_string(t.type), detail::runnable_types());
  try {
    return std::make_shared<BlockLinear>(t.type, f.tensor_data(t), rows, cols, activations);
  } catch (const lowbit::Error& e) {
    lowbit::detail::fail("gguf: tensor '{}': {}", name, e.what());
  }
}

/// The token-embedding table of GGUF tensor `name`, expected [rows][cols]: block types (any with
/// a codec, IQ4_NL/IQ4_XS included) stay bytes decoded per looked-up row; F32/F16/BF16 become
/// floats (bytes() = the stored bytes).
inline Embedding gguf_embedding(const lowbit::io::GgufFile& f, const std::string& name, Index rows, Index cols) {
  const auto& t = detail::tensor_of(f, name, rows, cols);
  if (detail::is_plain(t.type)) return Embedding(detail::plain_matrix(f, t), size_t(t.n_bytes));
  const lowbit::formats::Format* fmt = lowbit::formats::find_format(t.type);
  lowbit::detail::require(fmt != nullptr, "gguf: tensor '{}': type {} cannot be decoded; supported: {}", name,
                          lowbit::formats::to_string(t.type), lowbit::formats::detail::supported_list(true));
  // Every block's fp16 fields must be finite (as for the Linears): a NaN scale would only show
  // up once its token is looked up.
  lowbit::formats::BlockParams p;
  int8_t q[256];
  const uint8_t* data = f.tensor_data(t);
  for (uint64_t b = 0; b < t.n_bytes / uint64_t(fmt->type_size); ++b) {
    fmt->unpack(data + b * uint64_t(fmt->type_size), p, q);
    lowbit::detail::require(lowbit::is_finite_half(p.d) && lowbit::is_finite_half(p.m),
                            "gguf: tensor '{}': block {} has a scale that is not a finite half", name, b);
  }
  return Embedding(t.type, data, rows, cols);
}

/// The norms and vectors: float.
inline Eigen::VectorXf gguf_vector(const lowbit::io::GgufFile& f, const std::string& name, Index n) {
  const auto& t = detail::tensor_of(f, name, 1, n);
  lowbit::detail::require(detail::is_plain(t.type), "gguf: tensor '{}': expected F32, F16 or BF16, got {}", name,
                          lowbit::formats::to_string(t.type));
  const MatrixXfR m = detail::plain_matrix(f, t);
  return Eigen::VectorXf(Eigen::Map<const Eigen::VectorXf>(m.data(), n));
}

/// The model of a llama GGUF run as the file stores it: every Linear (and the head) whose tensor
/// has a block type becomes a BlockLinear over pack_weights(type, bytes) with opt.activations;
/// F32/F16/BF16 tensors are Fp32Linear; a block-typed token embedding keeps its bytes and decodes
/// a row per looked-up token; a file without output.weight runs its head on the embedding's
/// tensor (quantized, if it is). Norms are float. Blocks are read from the file's map while
/// packing; nothing is expanded to float. Throws lowbit::Error naming the tensor for types lowbit
/// cannot run (IQ4_XS Linears, IQ2_XXS, ...), wrong shapes and non-finite values or scales.
inline Model load_model(const lowbit::io::GgufFile& f, const GgufRunOptions& opt = {}) {
  ModelParts parts;
  parts.config = config_from_gguf(f, opt.context_length);
  const Config& c = parts.config;
  const Index q_dim = Index(c.n_heads) * c.head_dim, kv_dim = Index(c.n_kv_heads) * c.head_dim;
  const Index D = c.dim, F = c.hidden_dim, V = c.vocab_size;
  parts.token_embd = gguf_embedding(f, "token_embd.weight", V, D);
  parts.output_norm = gguf_vector(f, "output_norm.weight", D);
  const bool tied = f.find_tensor("output.weight") == nullptr;
  parts.output = gguf_linear(f, tied ? "token_embd.weight" : "output.weight", V, D, opt.activations);
  const Index shapes[7][2] = {{q_dim, D}, {kv_dim, D}, {kv_dim, D}, {D, q_dim}, {F, D}, {D, F}, {F, D}};
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    BlockParts b;
    for (size_t k = 0; k < 7; ++k)
      b.linear[k] = gguf_linear(f, p + linear_names()[k] + ".weight", shapes[k][0], shapes[k][1], opt.activations);
    b.attn_norm = gguf_vector(f, p + "attn_norm.weight", D);
    b.ffn_norm = gguf_vector(f, p + "ffn_norm.weight", D);
    parts.blocks.push_back(std::move(b));
  }
  return Model(std::move(parts));
}

/// Opens `path` (memory-mapped) and loads its model (see load_model(GgufFile)).
inline Model load_model(const std::string& path, const GgufRunOptions& opt = {}) {
  return load_model(lowbit::io::GgufFile::open(path), opt);
}

/// Tensor count per type, e.g. {"F32": 17, "Q4_0": 13, "F16": 2}, for reports.
inline std::map<std::string, int> tensor_types(const lowbit::io::GgufFile& f) {
  std::map<std::string, int> n;
  for (const auto& t : f.tensors()) ++n[lowbit::formats::to_string(t.type)];
  return n;
}

}  // namespace llama
