// train.hpp: full-sequence training forward and backward of the Llama (every parameter's gradient).
#pragma once

#include "../llama/model.hpp"

#include <lowbit/core/error.hpp>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace llama::train {

template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
using Index = Eigen::Index;

/// Keeps an argument out of template deduction (so nullptr can be passed for a matrix pointer).
template <class T>
struct NoDeduce {
  using type = T;
};

/// One transformer block's trainable tensors; matrices are [out, in] row-major.
template <class T>
struct LayerParams {
  Mat<T> wq, wk, wv, wo, w_gate, w_down, w_up;
  Vec<T> attn_norm, ffn_norm;
};

/// All trainable tensors. When `tied`, the output head is token_embd and `output` stays empty.
template <class T>
struct Params {
  Config config{};
  bool tied = true;
  Mat<T> token_embd, output;
  Vec<T> output_norm;
  std::vector<LayerParams<T>> layers;

  /// The output head's weight ([vocab, dim]).
  const Mat<T>& head() const { return tied ? token_embd : output; }
};

/// A named view of one tensor's storage.
template <class T>
struct TensorRef {
  std::string name;
  T* data;
  Index size;
};

/// Every trainable tensor of `p` in a fixed order (the order Adam states and gradients share).
template <class T>
std::vector<TensorRef<T>> tensors(Params<T>& p) {
  std::vector<TensorRef<T>> out;
  auto add = [&](std::string name, auto& m) { out.push_back({std::move(name), m.data(), m.size()}); };
  add("token_embd", p.token_embd);
  if (!p.tied) add("output", p.output);
  add("output_norm", p.output_norm);
  for (size_t l = 0; l < p.layers.size(); ++l) {
    auto& L = p.layers[l];
    const std::string b = "blk." + std::to_string(l) + ".";
    add(b + "attn_q", L.wq);
    add(b + "attn_k", L.wk);
    add(b + "attn_v", L.wv);
    add(b + "attn_output", L.wo);
    add(b + "ffn_gate", L.w_gate);
    add(b + "ffn_down", L.w_down);
    add(b + "ffn_up", L.w_up);
    add(b + "attn_norm", L.attn_norm);
    add(b + "ffn_norm", L.ffn_norm);
  }
  return out;
}

/// The linear weights fake quantization applies to, as pointers into `p` with their GGUF names:
/// the seven per-block projections, plus the embedding (which is also the tied head) if asked.
template <class T>
std::vector<std::pair<std::string, Mat<T>*>> linear_weights(Params<T>& p, bool with_embedding) {
  std::vector<std::pair<std::string, Mat<T>*>> out;
  if (with_embedding) out.emplace_back("token_embd", &p.token_embd);
  for (size_t l = 0; l < p.layers.size(); ++l) {
    auto& L = p.layers[l];
    const std::string b = "blk." + std::to_string(l) + ".";
    out.emplace_back(b + "attn_q", &L.wq);
    out.emplace_back(b + "attn_k", &L.wk);
    out.emplace_back(b + "attn_v", &L.wv);
    out.emplace_back(b + "attn_output", &L.wo);
    out.emplace_back(b + "ffn_gate", &L.w_gate);
    out.emplace_back(b + "ffn_down", &L.w_down);
    out.emplace_back(b + "ffn_up", &L.w_up);
  }
  return out;
}

/// Same shapes as `p`, all zeros (a gradient accumulator).
template <class T>
Params<T> zeros_like(const Params<T>& p) {
  Params<T> g = p;
  for (auto& t : tensors(g)) std::fill(t.data, t.data + t.size, T(0));
  return g;
}

/// Sets every entry of `g` to zero.
template <class T>
void set_zero(Params<T>& g) {
  for (auto& t : tensors(g)) std::fill(t.data, t.data + t.size, T(0));
}

/// Converts the engine's weights to trainable parameters of scalar T. The head is tied when
/// `output` is empty or equal to the embedding (as in stories260K).
template <class T>
Params<T> from_weights(const Weights& w) {
  Params<T> p;
  p.config = w.config;
  p.tied = w.output.size() == 0 || (w.output.rows() == w.token_embd.rows() &&
                                    w.output.cols() == w.token_embd.cols() &&
                                    w.output == w.token_embd);
  p.token_embd = w.token_embd.cast<T>();
  if (!p.tied) p.output = w.output.cast<T>();
  p.output_norm = w.output_norm.cast<T>();
  for (const auto& L : w.layers)
    p.layers.push_back({L.wq.cast<T>(), L.wk.cast<T>(), L.wv.cast<T>(), L.wo.cast<T>(),
                        L.w_gate.cast<T>(), L.w_down.cast<T>(), L.w_up.cast<T>(),
                        L.attn_norm.cast<T>(), L.ffn_norm.cast<T>()});
  return p;
}

/// Converts trainable parameters back to the engine's weights (the head copied when tied).
template <class T>
Weights to_weights(const Params<T>& p) {
  Weights w;
  w.config = p.config;
  w.token_embd = p.token_embd.template cast<float>();
  w.output = p.head().template cast<float>();
  w.output_norm = p.output_norm.template cast<float>();
  for (const auto& L : p.layers)
    w.layers.push_back({L.wq.template cast<float>(), L.wk.template cast<float>(),
                        L.wv.template cast<float>(), L.wo.template cast<float>(),
                        L.w_gate.template cast<float>(), L.w_down.template cast<float>(),
                        L.w_up.template cast<float>(), L.attn_norm.template cast<float>(),
                        L.ffn_norm.template cast<float>()});
  return w;
}

namespace detail {

/// y = x W^T for a [tokens, in] activation and an [out, in] weight.
template <class T>
Mat<T> linear(const Mat<T>& x, const Mat<T>& w) {
  Mat<T> y(x.rows(), w.rows());
  y.noalias() = x * w.transpose();
  return y;
}

/// Backward of y = x W^T: dW += dy^T x; returns dx = dy W.
template <class T>
Mat<T> linear_backward(const Mat<T>& dy, const Mat<T>& x, const Mat<T>& w, Mat<T>& dw) {
  dw.noalias() += dy.transpose() * x;
  Mat<T> dx(dy.rows(), w.cols());
  dx.noalias() = dy * w;
  return dx;
}

/// RMSNorm per row: y = g * x / sqrt(mean(x^2) + eps); `r` receives 1/sqrt(mean(x^2) + eps).
template <class T>
Mat<T> rmsnorm(const Mat<T>& x, const Vec<T>& g, T eps, Vec<T>& r) {
  r.resize(x.rows());
  Mat<T> y(x.rows(), x.cols());
  for (Index i = 0; i < x.rows(); ++i) {
    r(i) = T(1) / std::sqrt(x.row(i).squaredNorm() / T(x.cols()) + eps);
    y.row(i) = x.row(i).cwiseProduct(g.transpose()) * r(i);
  }
  return y;
}

/// Backward of rmsnorm: dg += sum_i dy_i * x_i * r_i; returns dx.
template <class T>
Mat<T> rmsnorm_backward(const Mat<T>& dy, const Mat<T>& x, const Vec<T>& g, const Vec<T>& r,
                        Vec<T>& dg) {
  Mat<T> dx(x.rows(), x.cols());
  const T n = T(x.cols());
  for (Index i = 0; i < x.rows(); ++i) {
    const auto gdy = dy.row(i).cwiseProduct(g.transpose()).eval();
    dg += (dy.row(i).cwiseProduct(x.row(i)) * r(i)).transpose();
    const T dot = gdy.dot(x.row(i));
    dx.row(i) = gdy * r(i) - x.row(i) * (r(i) * r(i) * r(i) * dot / n);
  }
  return dx;
}

/// cos/sin of the rotary angles pos * base^(-2i/head_dim), [tokens, head_dim/2] each.
template <class T>
void rope_tables(Index tokens, int head_dim, float base, Mat<T>& cos_t, Mat<T>& sin_t) {
  const int half = head_dim / 2;
  cos_t.resize(tokens, half);
  sin_t.resize(tokens, half);
  for (Index p = 0; p < tokens; ++p)
    for (int i = 0; i < half; ++i) {
      const double freq = std::pow(double(base), -2.0 * i / head_dim);
      const double a = double(p) * freq;
      cos_t(p, i) = T(std::cos(a));
      sin_t(p, i) = T(std::sin(a));
    }
}

/// Rotates adjacent pairs (2i, 2i+1) of every head in place (llama.cpp's NORM layout); with
/// `inverse` it applies the transposed rotation, which is the backward pass.
template <class T>
void rope(Mat<T>& x, int head_dim, const Mat<T>& cos_t, const Mat<T>& sin_t, bool inverse) {
  const Index heads = x.cols() / head_dim;
  const int half = head_dim / 2;
  for (Index p = 0; p < x.rows(); ++p)
    for (Index h = 0; h < heads; ++h)
      for (int i = 0; i < half; ++i) {
        T& a = x(p, h * head_dim + 2 * i);
        T& b = x(p, h * head_dim + 2 * i + 1);
        const T c = cos_t(p, i), s = inverse ? -sin_t(p, i) : sin_t(p, i);
        const T a0 = a, b0 = b;
        a = a0 * c - b0 * s;
        b = a0 * s + b0 * c;
      }
}

/// Causal grouped-query attention on rotated q [tokens, n_heads*hd], k and v
/// [tokens, n_kv_heads*hd]; `probs` receives each head's [tokens, tokens] softmax.
template <class T>
Mat<T> attention(const Mat<T>& q, const Mat<T>& k, const Mat<T>& v, int n_heads, int n_kv_heads,
                 int head_dim, std::vector<Mat<T>>& probs) {
  const Index S = q.rows();
  const int group = n_heads / n_kv_heads;
  const T scale = T(1) / std::sqrt(T(head_dim));
  Mat<T> o(S, Index(n_heads) * head_dim);
  probs.assign(size_t(n_heads), Mat<T>());
  for (int h = 0; h < n_heads; ++h) {
    const int g = h / group;
    const auto qh = q.middleCols(Index(h) * head_dim, head_dim);
    const auto kg = k.middleCols(Index(g) * head_dim, head_dim);
    const auto vg = v.middleCols(Index(g) * head_dim, head_dim);
    Mat<T>& P = probs[size_t(h)];
    P.noalias() = qh * kg.transpose();  // (a scalar factor here would defeat Eigen's GEMM)
    P *= scale;
    for (Index i = 0; i < S; ++i) {
      auto row = P.row(i).head(i + 1).array();
      row = (row - row.maxCoeff()).exp();
      row /= row.sum();
      P.row(i).tail(S - i - 1).setZero();
    }
    o.middleCols(Index(h) * head_dim, head_dim).noalias() = P * vg;
  }
  return o;
}

/// Backward of attention: returns dq and accumulates into dk, dv (sized like k, v).
template <class T>
Mat<T> attention_backward(const Mat<T>& d_o, const Mat<T>& q, const Mat<T>& k, const Mat<T>& v,
                          int n_heads, int n_kv_heads, int head_dim,
                          const std::vector<Mat<T>>& probs, Mat<T>& dk, Mat<T>& dv) {
  const Index S = q.rows();
  const int group = n_heads / n_kv_heads;
  const T scale = T(1) / std::sqrt(T(head_dim));
  Mat<T> dq(S, q.cols());
  Mat<T> dP(S, S);
  for (int h = 0; h < n_heads; ++h) {
    const int g = h / group;
    const auto qh = q.middleCols(Index(h) * head_dim, head_dim);
    const auto kg = k.middleCols(Index(g) * head_dim, head_dim);
    const auto vg = v.middleCols(Index(g) * head_dim, head_dim);
    const auto doh = d_o.middleCols(Index(h) * head_dim, head_dim);
    const Mat<T>& P = probs[size_t(h)];
    dP.noalias() = doh * vg.transpose();
    dv.middleCols(Index(g) * head_dim, head_dim).noalias() += P.transpose() * doh;
    // Softmax backward: dS = P * (dP - rowsum(dP * P)); masked entries have P = 0.
    for (Index i = 0; i < S; ++i) {
      const T dot = dP.row(i).head(i + 1).dot(P.row(i).head(i + 1));
      dP.row(i) = (P.row(i).array() * (dP.row(i).array() - dot)).matrix();
    }
    dP *= scale;
    dq.middleCols(Index(h) * head_dim, head_dim).noalias() = dP * kg;
    dk.middleCols(Index(g) * head_dim, head_dim).noalias() += dP.transpose() * qh;
  }
  return dq;
}

template <class T>
T sigmoid(T a) {
  return T(1) / (T(1) + std::exp(-a));
}

/// SwiGLU gate: m = silu(a) * b.
template <class T>
Mat<T> swiglu(const Mat<T>& a, const Mat<T>& b) {
  return a.binaryExpr(b, [](T x, T y) { return x * sigmoid(x) * y; });
}

/// Backward of swiglu: da, db from dm.
template <class T>
void swiglu_backward(const Mat<T>& dm, const Mat<T>& a, const Mat<T>& b, Mat<T>& da, Mat<T>& db) {
  da.resize(a.rows(), a.cols());
  db.resize(a.rows(), a.cols());
  for (Index i = 0; i < a.size(); ++i) {
    const T x = a.data()[i], s = sigmoid(x), gm = dm.data()[i];
    db.data()[i] = gm * x * s;
    da.data()[i] = gm * b.data()[i] * s * (T(1) + x * (T(1) - s));
  }
}

/// Row-wise log-softmax.
template <class T>
Mat<T> log_softmax(const Mat<T>& z) {
  Mat<T> out(z.rows(), z.cols());
  for (Index i = 0; i < z.rows(); ++i) {
    const T mx = z.row(i).maxCoeff();
    const T lse = mx + std::log((z.row(i).array() - mx).exp().sum());
    out.row(i) = z.row(i).array() - lse;
  }
  return out;
}

}  // namespace detail

/// What backward needs from one block's forward.
template <class T>
struct LayerCache {
  Mat<T> x, h1, q, k, v, o, x2, h2, a, b, m;
  Vec<T> r1, r2;
  std::vector<Mat<T>> probs;
};

/// What backward needs from the whole forward.
template <class T>
struct Cache {
  std::vector<int> tokens;
  std::vector<LayerCache<T>> layers;
  Mat<T> cos_t, sin_t, xf, hf;
  Vec<T> rf;
};

/// Throws lowbit::Error unless the shapes of `p` match its config and every token is in range.
template <class T>
void validate(const Params<T>& p, const std::vector<int>& tokens) {
  const Config& c = p.config;
  lowbit::detail::require(c.dim > 0 && c.n_heads > 0 && c.n_kv_heads > 0 && c.head_dim > 0 &&
                              c.head_dim % 2 == 0 && c.n_heads % c.n_kv_heads == 0 &&
                              c.n_heads * c.head_dim == c.dim &&
                              (c.rope_dim == 0 || c.rope_dim == c.head_dim),
                          "config: expected dim = n_heads*head_dim, even head_dim, n_heads a "
                          "multiple of n_kv_heads and RoPE over the whole head");
  lowbit::detail::require(!tokens.empty(), "tokens: expected at least one token");
  for (size_t i = 0; i < tokens.size(); ++i)
    lowbit::detail::require(tokens[i] >= 0 && tokens[i] < c.vocab_size,
                            "tokens[{}]: expected 0..{}, got {}", i, c.vocab_size - 1, tokens[i]);
  lowbit::detail::require(p.token_embd.rows() == c.vocab_size && p.token_embd.cols() == c.dim,
                          "params.token_embd: expected {}x{}", c.vocab_size, c.dim);
  lowbit::detail::require(int(p.layers.size()) == c.n_layers, "params.layers: expected {}",
                          c.n_layers);
  lowbit::detail::require(p.head().rows() == c.vocab_size && p.head().cols() == c.dim,
                          "params.output: expected {}x{}", c.vocab_size, c.dim);
}

/// Logits [tokens, vocab] of the whole sequence; fills `cache` for backward when given.
template <class T>
Mat<T> forward(const Params<T>& p, const std::vector<int>& tokens, Cache<T>* cache = nullptr) {
  validate(p, tokens);
  const Config& c = p.config;
  const Index S = Index(tokens.size());
  const T eps = T(c.rms_eps);
  Cache<T> local;
  Cache<T>& C = cache ? *cache : local;
  C.tokens = tokens;
  C.layers.resize(p.layers.size());
  detail::rope_tables(S, c.head_dim, c.rope_base, C.cos_t, C.sin_t);
  Mat<T> x(S, c.dim);
  for (Index i = 0; i < S; ++i) x.row(i) = p.token_embd.row(tokens[size_t(i)]);
  for (size_t l = 0; l < p.layers.size(); ++l) {
    const auto& L = p.layers[l];
    auto& K = C.layers[l];
    K.x = x;
    K.h1 = detail::rmsnorm(x, L.attn_norm, eps, K.r1);
    K.q = detail::linear(K.h1, L.wq);
    K.k = detail::linear(K.h1, L.wk);
    K.v = detail::linear(K.h1, L.wv);
    detail::rope(K.q, c.head_dim, C.cos_t, C.sin_t, false);
    detail::rope(K.k, c.head_dim, C.cos_t, C.sin_t, false);
    K.o = detail::attention(K.q, K.k, K.v, c.n_heads, c.n_kv_heads, c.head_dim, K.probs);
    K.x2 = x + detail::linear(K.o, L.wo);
    K.h2 = detail::rmsnorm(K.x2, L.ffn_norm, eps, K.r2);
    K.a = detail::linear(K.h2, L.w_gate);
    K.b = detail::linear(K.h2, L.w_up);
    K.m = detail::swiglu(K.a, K.b);
    x = K.x2 + detail::linear(K.m, L.w_down);
    if (!cache) K = LayerCache<T>();  // inference only: drop activations as we go
  }
  C.xf = x;
  C.hf = detail::rmsnorm(x, p.output_norm, eps, C.rf);
  return detail::linear(C.hf, p.head());
}

/// Called during backward with each Linear's name ("blk.N.attn_q", ..., "output") and the
/// gradient of the loss with respect to its output [tokens, out] (e.g. for Fisher sensitivities);
/// last with "token_embd" and the gradient with respect to the embedded tokens [tokens, dim].
template <class T>
using OutputGradHook = std::function<void(const std::string& name, const Mat<T>& dy)>;

/// Backward from d(loss)/d(logits) through the cached forward; accumulates into `g`.
template <class T>
void backward(const Params<T>& p, const Cache<T>& C, const Mat<T>& dlogits, Params<T>& g,
              const typename NoDeduce<OutputGradHook<T>>::type& hook = {}) {
  const Config& c = p.config;
  auto report = [&](size_t layer, const char* name, const Mat<T>& dy) {
    if (hook) hook("blk." + std::to_string(layer) + "." + name, dy);
  };
  if (hook) hook("output", dlogits);
  Mat<T>& dhead = p.tied ? g.token_embd : g.output;
  Mat<T> dx = detail::rmsnorm_backward(detail::linear_backward(dlogits, C.hf, p.head(), dhead),
                                       C.xf, p.output_norm, C.rf, g.output_norm);
  for (size_t li = p.layers.size(); li-- > 0;) {
    const auto& L = p.layers[li];
    const auto& K = C.layers[li];
    auto& G = g.layers[li];
    // x_out = x2 + down(swiglu(gate(h2), up(h2)))
    report(li, "ffn_down", dx);
    const Mat<T> dm = detail::linear_backward(dx, K.m, L.w_down, G.w_down);
    Mat<T> da, db;
    detail::swiglu_backward(dm, K.a, K.b, da, db);
    report(li, "ffn_gate", da);
    report(li, "ffn_up", db);
    Mat<T> dh2 = detail::linear_backward(da, K.h2, L.w_gate, G.w_gate);
    dh2 += detail::linear_backward(db, K.h2, L.w_up, G.w_up);
    const Mat<T> dx2 = dx + detail::rmsnorm_backward(dh2, K.x2, L.ffn_norm, K.r2, G.ffn_norm);
    // x2 = x + wo(attention(rope(wq h1), rope(wk h1), wv h1))
    report(li, "attn_output", dx2);
    const Mat<T> d_o = detail::linear_backward(dx2, K.o, L.wo, G.wo);
    Mat<T> dk = Mat<T>::Zero(K.k.rows(), K.k.cols()), dv = Mat<T>::Zero(K.v.rows(), K.v.cols());
    Mat<T> dq = detail::attention_backward(d_o, K.q, K.k, K.v, c.n_heads, c.n_kv_heads,
                                           c.head_dim, K.probs, dk, dv);
    detail::rope(dq, c.head_dim, C.cos_t, C.sin_t, true);
    detail::rope(dk, c.head_dim, C.cos_t, C.sin_t, true);
    report(li, "attn_q", dq);
    report(li, "attn_k", dk);
    report(li, "attn_v", dv);
    Mat<T> dh1 = detail::linear_backward(dq, K.h1, L.wq, G.wq);
    dh1 += detail::linear_backward(dk, K.h1, L.wk, G.wk);
    dh1 += detail::linear_backward(dv, K.h1, L.wv, G.wv);
    dx = dx2 + detail::rmsnorm_backward(dh1, K.x, L.attn_norm, K.r1, G.attn_norm);
  }
  if (hook) hook("token_embd", dx);
  for (size_t i = 0; i < C.tokens.size(); ++i)
    g.token_embd.row(C.tokens[i]) += dx.row(Index(i));
}

/// Loss weights: ce * cross-entropy(next token) + kd * KL(teacher || student), summed over
/// positions (the caller divides by the batch's prediction count through `grad_scale`).
struct LossOptions {
  double ce_weight = 1.0;
  double kd_weight = 0.0;
};

/// Summed losses of one sequence and its number of predictions (tokens - 1).
struct LossStats {
  double ce = 0, kl = 0;
  Index predictions = 0;
  LossStats& operator+=(const LossStats& o) {
    ce += o.ce;
    kl += o.kl;
    predictions += o.predictions;
    return *this;
  }
};

/// d(loss)/d(logits) for next-token prediction, scaled by `grad_scale`, and the loss sums.
/// `teacher` (logits of the same tokens, or nullptr) enables the distillation term.
template <class T>
Mat<T> loss_gradient(const Mat<T>& logits, const std::vector<int>& tokens,
                     const typename NoDeduce<Mat<T>>::type* teacher,
                     const LossOptions& opt, T grad_scale, LossStats& stats) {
  const Index S = logits.rows();
  lowbit::detail::require(Index(tokens.size()) == S, "tokens: expected {} entries, got {}", S,
                          tokens.size());
  lowbit::detail::require(!teacher || (teacher->rows() == S && teacher->cols() == logits.cols()),
                          "teacher: expected {}x{} logits", S, logits.cols());
  lowbit::detail::require(opt.kd_weight == 0 || teacher, "teacher: needed when kd_weight != 0");
  Mat<T> d = Mat<T>::Zero(S, logits.cols());
  if (S < 2) return d;
  const Mat<T> ls = detail::log_softmax<T>(logits.topRows(S - 1));
  Mat<T> lt;
  if (teacher && opt.kd_weight != 0) lt = detail::log_softmax<T>(teacher->topRows(S - 1));
  for (Index i = 0; i + 1 < S; ++i) {
    const int y = tokens[size_t(i + 1)];
    stats.ce -= double(ls(i, y));
    const Eigen::Array<T, 1, Eigen::Dynamic> ps = ls.row(i).array().exp();
    d.row(i) = (ps * T(opt.ce_weight)).matrix();
    d(i, y) -= T(opt.ce_weight);
    if (lt.size()) {
      const auto pt = lt.row(i).array().exp();
      stats.kl += double((pt * (lt.row(i).array() - ls.row(i).array())).sum());
      d.row(i) += ((ps - pt) * T(opt.kd_weight)).matrix();
    }
  }
  stats.predictions += S - 1;
  d *= grad_scale;
  return d;
}

/// The objective of loss_gradient() without the gradient: ce * CE + kd * KL, summed.
inline double objective(const LossStats& s, const LossOptions& opt) {
  return opt.ce_weight * s.ce + opt.kd_weight * s.kl;
}

/// Forward + loss + backward of one sequence: accumulates grad_scale * d(objective)/d(params)
/// into `g` and returns the (unscaled) loss sums.
template <class T>
LossStats accumulate_gradient(const Params<T>& p, const std::vector<int>& tokens,
                              const typename NoDeduce<Mat<T>>::type* teacher,
                              const LossOptions& opt, T grad_scale,
                              Params<T>& g,
                              const typename NoDeduce<OutputGradHook<T>>::type& hook = {}) {
  Cache<T> cache;
  const Mat<T> logits = forward(p, tokens, &cache);
  LossStats stats;
  const Mat<T> d = loss_gradient(logits, tokens, teacher, opt, grad_scale, stats);
  backward(p, cache, d, g, hook);
  return stats;
}

}  // namespace llama::train
