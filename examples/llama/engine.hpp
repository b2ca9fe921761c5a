// engine.hpp: llama forward pass (RMSNorm, RoPE NORM, GQA + KV cache, SwiGLU) over pluggable Linears.
#pragma once

#include "model.hpp"

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/formats/format.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace llama {

using lowbit::Index;
using lowbit::MatrixXfR;

/// y = x · Wᵀ for x [tokens, in]; implementations are the run-time backends.
class Linear {
 public:
  virtual ~Linear() = default;
  virtual MatrixXfR forward(const MatrixXfR& x) const = 0;
  virtual Index out_features() const = 0;
  virtual Index in_features() const = 0;
  /// Bytes the weights take in this backend (codes + scales + zero points); for weights loaded
  /// from a GGUF as they are, the bytes the file stores for the tensor.
  virtual size_t bytes() const = 0;
};

/// The FP32 backend: Eigen's GEMM.
class Fp32Linear final : public Linear {
 public:
  /// `stored_bytes` > 0: what bytes() reports (e.g. 2 per weight for an F16 tensor of a file);
  /// 0: 4 per weight.
  explicit Fp32Linear(MatrixXfR w, size_t stored_bytes = 0)
      : w_(std::move(w)), bytes_(stored_bytes > 0 ? stored_bytes : size_t(w_.size()) * 4) {}
  MatrixXfR forward(const MatrixXfR& x) const override { return x * w_.transpose(); }
  Index out_features() const override { return w_.rows(); }
  Index in_features() const override { return w_.cols(); }
  size_t bytes() const override { return bytes_; }
  const MatrixXfR& weight() const { return w_; }

 private:
  MatrixXfR w_;
  size_t bytes_ = 0;
};

/// The token-embedding table: float rows, or the rows of a GGUF block format kept as their bytes
/// and decoded (formats::decode_row, bit-identical to llama.cpp's dequantization) one row at a
/// time when a token is looked up.
class Embedding {
 public:
  Embedding() = default;
  /// A float table; `stored_bytes` > 0 is what bytes() reports (else 4 per value).
  explicit Embedding(MatrixXfR table, size_t stored_bytes = 0)
      : rows_(table.rows()), cols_(table.cols()), table_(std::move(table)),
        stored_(stored_bytes > 0 ? stored_bytes : size_t(table_.size()) * 4) {}
  /// `rows` rows of `cols` values of block type `type` at `data` (rows * row_bytes(type, cols)
  /// bytes, as GGUF stores them), copied. Throws lowbit::Error for a type without a codec, an
  /// empty shape, cols not a multiple of the block, or a null pointer.
  Embedding(lowbit::formats::Type type, const uint8_t* data, Index rows, Index cols)
      : rows_(rows), cols_(cols), type_(type) {
    const lowbit::formats::Format* f = lowbit::formats::find_format(type);
    lowbit::detail::require(f != nullptr, "embedding: type {} is not a block format lowbit decodes",
                            lowbit::formats::to_string(type));
    lowbit::detail::require(rows > 0 && cols > 0 && cols % f->block_size == 0,
                            "embedding: expected rows > 0 and cols a multiple of {}'s block of {}, got {}x{}",
                            f->name, f->block_size, rows, cols);
    lowbit::detail::require(data != nullptr, "embedding: expected the table's bytes, got nullptr");
    row_bytes_ = size_t(lowbit::formats::row_bytes(type, uint64_t(cols)));
    bytes_.assign(data, data + size_t(rows) * row_bytes_);
    stored_ = bytes_.size();
  }

  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  /// True for a table kept in a block format.
  bool quantized() const { return !bytes_.empty(); }
  /// The block type, or F32 for a float table.
  lowbit::formats::Type type() const { return type_; }
  /// Stored bytes (the block bytes exactly; for a float table as given).
  size_t bytes() const { return stored_; }
  /// The float table (empty when quantized()).
  const MatrixXfR& table() const { return table_; }
  /// Row `id` (0 <= id < rows(), unchecked) into out[0 .. cols()).
  void lookup(Index id, float* out) const {
    if (!quantized()) {
      std::copy(table_.data() + id * cols_, table_.data() + (id + 1) * cols_, out);
      return;
    }
    lowbit::formats::decode_row(type_, bytes_.data() + size_t(id) * row_bytes_, cols_, out);
  }

 private:
  Index rows_ = 0, cols_ = 0;
  lowbit::formats::Type type_ = lowbit::formats::Type::F32;
  MatrixXfR table_;
  std::vector<uint8_t> bytes_;
  size_t row_bytes_ = 0, stored_ = 0;
};

/// One transformer block as the engine runs it: its norms and seven Linears (linear_names() order).
struct BlockParts {
  Eigen::VectorXf attn_norm, ffn_norm;
  std::array<std::shared_ptr<const Linear>, 7> linear;
};

/// Everything a Model runs: hyper-parameters, embedding, blocks, final norm and head.
struct ModelParts {
  Config config;
  Embedding token_embd;
  Eigen::VectorXf output_norm;
  std::shared_ptr<const Linear> output;
  std::vector<BlockParts> blocks;
};

/// Called with (layer, linear name, input activations [tokens, in]) before every Linear runs;
/// the output head is reported as layer -1, name "output".
using CaptureHook = std::function<void(int layer, const std::string& name, const MatrixXfR& x)>;

/// A llama network whose seven Linears per block (and the head) are backend objects.
class Model {
 public:
  /// Builds the model with FP32 Linears for every weight.
  explicit Model(const Weights& w) : config_(w.config) {
    token_embd_ = Embedding(w.token_embd);
    output_norm_ = w.output_norm;
    output_ = std::make_shared<Fp32Linear>(w.output);
    for (const auto& L : w.layers) {
      Block b;
      b.attn_norm = L.attn_norm;
      b.ffn_norm = L.ffn_norm;
      for (int k = 0; k < 7; ++k) b.linear[size_t(k)] = std::make_shared<Fp32Linear>(linear_weight(L, k));
      blocks_.push_back(std::move(b));
    }
    reset();
  }

  /// Builds the model from its parts (e.g. load_model's Linears on GGUF blocks); throws
  /// lowbit::Error, naming the part, for a missing Linear or any shape that disagrees with config.
  explicit Model(ModelParts parts) : config_(parts.config) {
    const Config& c = config_;
    const Index q_dim = Index(c.n_heads) * c.head_dim, kv = Index(c.n_kv_heads) * c.head_dim;
    const Index D = c.dim, F = c.hidden_dim, V = c.vocab_size;
    lowbit::detail::require(parts.token_embd.rows() == V && parts.token_embd.cols() == D,
                            "parts.token_embd: expected [{}, {}], got [{}, {}]", V, D, parts.token_embd.rows(),
                            parts.token_embd.cols());
    lowbit::detail::require(parts.output_norm.size() == D, "parts.output_norm: expected {} values, got {}", D,
                            parts.output_norm.size());
    const auto check = [](const std::shared_ptr<const Linear>& l, Index out, Index in, const std::string& what) {
      lowbit::detail::require(l != nullptr, "{}: expected a Linear, got nullptr", what);
      lowbit::detail::require(l->out_features() == out && l->in_features() == in, "{}: expected [{}, {}], got [{}, {}]",
                              what, out, in, l->out_features(), l->in_features());
    };
    check(parts.output, V, D, "parts.output");
    lowbit::detail::require(parts.blocks.size() == size_t(c.n_layers), "parts.blocks: expected {} blocks, got {}",
                            c.n_layers, parts.blocks.size());
    const Index shapes[7][2] = {{q_dim, D}, {kv, D}, {kv, D}, {D, q_dim}, {F, D}, {D, F}, {F, D}};
    for (size_t l = 0; l < parts.blocks.size(); ++l) {
      const BlockParts& b = parts.blocks[l];
      for (size_t k = 0; k < 7; ++k)
        check(b.linear[k], shapes[k][0], shapes[k][1],
              "parts.blocks[" + std::to_string(l) + "]." + linear_names()[k]);
      lowbit::detail::require(b.attn_norm.size() == D && b.ffn_norm.size() == D,
                              "parts.blocks[{}]: expected norms of {} values", l, D);
    }
    token_embd_ = std::move(parts.token_embd);
    output_norm_ = std::move(parts.output_norm);
    output_ = std::move(parts.output);
    for (auto& b : parts.blocks)
      blocks_.push_back(Block{std::move(b.attn_norm), std::move(b.ffn_norm), std::move(b.linear)});
    reset();
  }

  const Config& config() const { return config_; }
  /// The token-embedding table (float, or block bytes decoded per looked-up row).
  const Embedding& token_embedding() const { return token_embd_; }

  /// Replaces linear `k` (linear_names() order) of `layer`; shapes must match.
  void set_linear(int layer, int k, std::shared_ptr<const Linear> lin) {
    lowbit::detail::require(layer >= 0 && layer < config_.n_layers, "layer: expected 0..{}, got {}",
                            config_.n_layers - 1, layer);
    lowbit::detail::require(k >= 0 && k < 7, "k: expected 0..6, got {}", k);
    lowbit::detail::require(lin != nullptr, "lin: expected a Linear, got nullptr");
    auto& slot = blocks_[size_t(layer)].linear[size_t(k)];
    lowbit::detail::require(lin->out_features() == slot->out_features() &&
                                lin->in_features() == slot->in_features(),
                            "lin: expected [{}, {}], got [{}, {}]", slot->out_features(),
                            slot->in_features(), lin->out_features(), lin->in_features());
    slot = std::move(lin);
  }
  /// Replaces the output head.
  void set_output(std::shared_ptr<const Linear> lin) {
    lowbit::detail::require(lin != nullptr && lin->out_features() == output_->out_features() &&
                                lin->in_features() == output_->in_features(),
                            "lin: expected an output head of [{}, {}]", output_->out_features(),
                            output_->in_features());
    output_ = std::move(lin);
  }
  const Linear& linear(int layer, int k) const { return *blocks_.at(size_t(layer)).linear.at(size_t(k)); }
  const Linear& output() const { return *output_; }

  /// Bytes of all Linear weights (blocks + head) in their backends.
  size_t linear_bytes(bool include_output = true) const {
    size_t n = include_output ? output_->bytes() : 0;
    for (const auto& b : blocks_)
      for (const auto& l : b.linear) n += l->bytes();
    return n;
  }

  void set_capture(CaptureHook hook) { capture_ = std::move(hook); }

  /// Clears the KV cache (the next forward starts at position 0).
  void reset() {
    n_past_ = 0;
    const Index kv = Index(config_.n_kv_heads) * config_.head_dim;
    k_cache_.assign(blocks_.size(), MatrixXfR::Zero(0, kv));
    v_cache_ = k_cache_;
  }
  /// Positions already in the KV cache.
  int n_past() const { return n_past_; }

  /// Logits [tokens, vocab] of `tokens` placed at positions n_past().. n_past()+M-1, appending
  /// their keys and values to the cache: a whole chunk at once (scoring) or one token (decoding).
  MatrixXfR forward(const std::vector<int>& tokens) {
    const auto M = Index(tokens.size());
    lowbit::detail::require(M > 0, "tokens: expected at least one token");
    lowbit::detail::require(n_past_ + M <= config_.context_length,
                            "tokens: {} cached + {} new positions exceed the context of {}", n_past_,
                            M, config_.context_length);
    for (int t : tokens)
      lowbit::detail::require(t >= 0 && t < config_.vocab_size, "tokens: id {} is outside 0..{}", t,
                              config_.vocab_size - 1);
    const Config& c = config_;
    MatrixXfR x(M, c.dim);
    for (Index i = 0; i < M; ++i) token_embd_.lookup(tokens[size_t(i)], x.data() + i * x.outerStride());
    const Index start = n_past_, T = start + M, hd = c.head_dim;
    const Index kv_dim = Index(c.n_kv_heads) * hd;
    const int group = c.n_heads / c.n_kv_heads;
    const float inv_sqrt = 1.0f / std::sqrt(float(hd));
    for (size_t l = 0; l < blocks_.size(); ++l) {
      const Block& b = blocks_[l];
      const int layer = int(l);
      MatrixXfR h = rms_norm(x, b.attn_norm);
      MatrixXfR q = run(layer, 0, h), k = run(layer, 1, h, false), v = run(layer, 2, h, false);
      rope(q, start);
      rope(k, start);
      MatrixXfR& K = k_cache_[l];
      MatrixXfR& V = v_cache_[l];
      K.conservativeResize(T, kv_dim);
      V.conservativeResize(T, kv_dim);
      K.bottomRows(M) = k;
      V.bottomRows(M) = v;
      MatrixXfR att(M, Index(c.n_heads) * hd);
      MatrixXfR s(M, T);
      for (int head = 0; head < c.n_heads; ++head) {
        const Index kvh = Index(head / group) * hd;
        s.noalias() = q.middleCols(Index(head) * hd, hd) * K.middleCols(kvh, hd).transpose();
        for (Index i = 0; i < M; ++i) {  // causal softmax over positions 0..start+i
          const Index n = start + i + 1;
          auto row = s.row(i).head(n);
          row *= inv_sqrt;
          const float mx = row.maxCoeff();
          row = (row.array() - mx).exp();
          row /= row.sum();
          s.row(i).tail(T - n).setZero();
        }
        att.middleCols(Index(head) * hd, hd).noalias() = s * V.middleCols(kvh, hd);
      }
      x += run(layer, 3, att);
      h = rms_norm(x, b.ffn_norm);
      MatrixXfR g = run(layer, 4, h), u = run(layer, 6, h, false);
      g = (g.array() / (1.0f + (-g.array()).exp())) * u.array();  // SiLU(gate) * up
      x += run(layer, 5, g);
    }
    n_past_ = int(T);
    const MatrixXfR h = rms_norm(x, output_norm_);
    if (capture_) capture_(-1, "output", h);
    return output_->forward(h);
  }

 private:
  struct Block {
    Eigen::VectorXf attn_norm, ffn_norm;
    std::array<std::shared_ptr<const Linear>, 7> linear;
  };

  MatrixXfR run(int layer, int k, const MatrixXfR& x, bool capture = true) const {
    // q/k/v (and gate/up) share an input: capture it once, under the first name.
    if (capture_ && capture) capture_(layer, linear_names()[size_t(k)], x);
    return blocks_[size_t(layer)].linear[size_t(k)]->forward(x);
  }

  MatrixXfR rms_norm(const MatrixXfR& x, const Eigen::VectorXf& gain) const {
    MatrixXfR y(x.rows(), x.cols());
    for (Index i = 0; i < x.rows(); ++i) {
      const float ms = x.row(i).squaredNorm() / float(x.cols());
      y.row(i) = x.row(i).cwiseProduct(gain.transpose()) / std::sqrt(ms + config_.rms_eps);
    }
    return y;
  }

  // Adjacent-pair rotation (llama.cpp NORM): pair (2j, 2j+1) of each head turns by
  // pos * base^(-2j / rope_dim), for the first rope_dim dims of the head.
  void rope(MatrixXfR& m, Index start) const {
    const int hd = config_.head_dim, nr = config_.rope_dim;
    const Index heads = m.cols() / hd;
    for (Index i = 0; i < m.rows(); ++i) {
      const double pos = double(start + i);
      for (int j = 0; j < nr / 2; ++j) {
        const double theta = pos * std::pow(double(config_.rope_base), -2.0 * j / nr);
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

  Config config_;
  Embedding token_embd_;
  Eigen::VectorXf output_norm_;
  std::shared_ptr<const Linear> output_;
  std::vector<Block> blocks_;
  CaptureHook capture_;
  int n_past_ = 0;
  std::vector<MatrixXfR> k_cache_, v_cache_;
};

}  // namespace llama
