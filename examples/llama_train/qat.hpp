// qat.hpp: whole-model quantization-aware training of the Llama (fake-quant Linears, STE/LSQ, Adam).
#pragma once

#include "adam.hpp"
#include "train.hpp"

#include <lowbit/core/half.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/qat/fake_quantize.hpp>
#include <lowbit/qat/lsq.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace llama::train {

/// Names of the tensors QAT can quantize: "blk.N.<linear>" for the seven Linears of each block
/// and "output" for the head (which reads the embedding when the model is tied).
template <class T>
std::vector<std::string> quantizable_names(const Params<T>& p) {
  std::vector<std::string> out;
  auto& mp = const_cast<Params<T>&>(p);
  for (const auto& [name, m] : linear_weights(mp, false)) out.push_back(name);
  out.push_back("output");
  return out;
}

/// Fine-tuning settings. The loss is ce_weight * CE + kd_weight * KL(FP32 teacher || student).
struct QatOptions {
  int steps = 200;                 ///< Adam steps
  long batch_tokens = 2048;        ///< predictions per step (whole sequences, at least one)
  float lr = 5e-4f;                ///< weight learning rate (cosine-decayed to lr_final_ratio*lr)
  float lr_final_ratio = 0.1f;
  float scale_lr_ratio = 0.1f;     ///< learned step sizes use lr * scale_lr_ratio
  bool lsq = true;                 ///< learn step sizes (LSQ); false: STE only, scales frozen
  bool train_float = true;         ///< also fine-tune the float tensors (norms, embedding)
  LossOptions loss{0.0, 1.0};      ///< default: pure distillation to the FP32 model
  uint32_t seed = 1234;            ///< batch order
};

/// One logged step.
struct QatStep {
  int step;
  double ce, kl;  ///< mean per prediction over the step's batch
  double seconds;
};

/// The model under QAT: float latent weights, learnable per-tensor QuantParams, and the
/// effective (fake-quantized) weights the forward pass uses, which are exactly what inference
/// runs after export (QuantizedMatrix from latent + params dequantizes to the effective weight).
class QatModel {
 public:
  /// `params` maps quantizable_names() entries to their initial QuantParams (typically a PTQ
  /// method's); names not in the map stay float.
  QatModel(Params<float> latent, std::map<std::string, lowbit::QuantParams> params,
           bool half_scales = true)
      : latent_(std::move(latent)), params_(std::move(params)) {
    const auto names = quantizable_names(latent_);
    for (const auto& [name, qp] : params_) {
      lowbit::detail::require(std::find(names.begin(), names.end(), name) != names.end(),
                              "params: '{}' is not a quantizable tensor", name);
      const Mat<float>& w = latent_weight(latent_, name);
      lowbit::validate(qp, w.rows(), w.cols());
    }
    effective_ = latent_;
    effective_.tied = false;
    effective_.output = latent_.head();
    half_scales_ = half_scales;
    if (half_scales_) round_scales_to_half();
    refresh();
  }

  const Params<float>& latent() const { return latent_; }
  const Params<float>& effective() const { return effective_; }
  const std::map<std::string, lowbit::QuantParams>& params() const { return params_; }

  /// Recomputes the effective weights from the latent ones and the current params.
  void refresh() {
    copy_float_tensors();
    for (const auto& name : quantizable_names(latent_)) {
      Mat<float>& eff = effective_weight(name);
      const Mat<float>& w = latent_weight(latent_, name);
      auto it = params_.find(name);
      if (it == params_.end())
        eff = w;
      else
        lowbit::qat::fake_quantize_into(w, it->second, eff);
    }
    // A tied model stores one table: when the head is quantized, the lookup reads it too.
    if (latent_.tied && params_.count("output")) effective_.token_embd = effective_.output;
  }

  /// Rounds every per-group step size to the nearest binary16 value, the precision lowbit's
  /// packed per-group weights store scales in, so the kernels run exactly the trained weights.
  void round_scales_to_half() {
    for (auto& [name, qp] : params_) {
      if (qp.scheme.granularity != lowbit::Granularity::per_group) continue;
      for (float& s : qp.scale) {
        const uint16_t h = lowbit::float_to_half(s);
        if (lowbit::is_normal_half(h)) s = lowbit::half_to_float(h);
      }
    }
  }

  /// Fine-tunes on `sequences` (token ids, BOS first). `teacher` gives the FP32 model for the
  /// distillation term (required when kd_weight != 0). `on_step` is called after every step.
  std::vector<QatStep> train(const std::vector<std::vector<int>>& sequences,
                             const Params<float>* teacher, const QatOptions& opt,
                             const std::function<void(const QatStep&)>& on_step = {}) {
    lowbit::detail::require(!sequences.empty(), "sequences: expected at least one sequence");
    lowbit::detail::require(opt.steps >= 0, "steps: expected >= 0, got {}", opt.steps);
    lowbit::detail::require(opt.batch_tokens > 0, "batch_tokens: expected > 0, got {}",
                            opt.batch_tokens);
    lowbit::detail::require(opt.loss.kd_weight == 0 || teacher != nullptr,
                            "teacher: needed when kd_weight != 0");
    lowbit::detail::require(
        std::any_of(sequences.begin(), sequences.end(), [](const auto& s) { return s.size() >= 2; }),
        "sequences: expected one with at least two tokens");
    std::vector<size_t> order(sequences.size());
    std::iota(order.begin(), order.end(), size_t(0));
    std::mt19937 rng(opt.seed);
    std::shuffle(order.begin(), order.end(), rng);
    size_t cursor = 0;

    Params<float> grad_eff = zeros_like(effective_);
    Params<float> grad_latent = zeros_like(latent_);
    std::map<std::string, std::vector<float>> grad_scale;
    for (const auto& [name, qp] : params_) grad_scale[name].assign(qp.scale.size(), 0.0f);
    Adam adam(opt.lr);
    std::vector<QatStep> log;
    lowbit::qat::LsqGrads lsq;
    for (int step = 0; step < opt.steps; ++step) {
      const auto t0 = std::chrono::steady_clock::now();
      // The batch: whole sequences until batch_tokens predictions, in shuffled order.
      std::vector<const std::vector<int>*> batch;
      long predictions = 0;
      while (predictions < opt.batch_tokens) {
        if (cursor == order.size()) {
          std::shuffle(order.begin(), order.end(), rng);
          cursor = 0;
        }
        const auto& s = sequences[order[cursor++]];
        if (s.size() < 2) continue;
        batch.push_back(&s);
        predictions += long(s.size()) - 1;
      }
      set_zero(grad_eff);
      LossStats stats;
      const float gscale = 1.0f / float(predictions);
      for (const auto* s : batch) {
        Mat<float> t;
        if (opt.loss.kd_weight != 0) t = forward(*teacher, *s);
        stats += accumulate_gradient(effective_, *s, t.size() ? &t : nullptr, opt.loss, gscale,
                                     grad_eff);
      }
      to_latent_gradients(grad_eff, grad_latent, grad_scale, opt.lsq, lsq);
      // Cosine decay of the learning rate.
      const double progress = opt.steps > 1 ? double(step) / double(opt.steps - 1) : 1.0;
      const double cosine = 0.5 * (1.0 + std::cos(3.141592653589793 * progress));
      adam.set_lr(float(opt.lr * (opt.lr_final_ratio + (1.0 - opt.lr_final_ratio) * cosine)));
      std::vector<Adam::Slot> slots;
      auto lt = tensors(latent_);
      auto gt = tensors(grad_latent);
      for (size_t k = 0; k < lt.size(); ++k) {
        const bool quantized = is_quantized_tensor(lt[k].name);
        slots.push_back({lt[k].data, gt[k].data, size_t(lt[k].size),
                         quantized || opt.train_float ? 1.0f : 0.0f});
      }
      for (auto& [name, qp] : params_)
        slots.push_back({qp.scale.data(), grad_scale[name].data(), qp.scale.size(),
                         opt.lsq ? opt.scale_lr_ratio : 0.0f});
      adam.step(slots);
      for (auto& [name, qp] : params_)
        for (float& s : qp.scale) s = std::max(s, 1e-8f);  // a step size must stay positive
      if (half_scales_) round_scales_to_half();
      refresh();
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      log.push_back({step, stats.ce / double(stats.predictions),
                     stats.kl / double(stats.predictions), secs});
      if (on_step) on_step(log.back());
    }
    return log;
  }

 private:
  static Mat<float>& latent_weight(Params<float>& p, const std::string& name) {
    if (name == "output") return p.tied ? p.token_embd : p.output;
    for (auto& [n, m] : linear_weights(p, false))
      if (n == name) return *m;
    lowbit::detail::fail("name: '{}' is not a quantizable tensor", name);
  }
  static const Mat<float>& latent_weight(const Params<float>& p, const std::string& name) {
    return latent_weight(const_cast<Params<float>&>(p), name);
  }
  Mat<float>& effective_weight(const std::string& name) {
    return latent_weight(effective_, name);  // effective_ is untied: "output" is its own tensor
  }

  // Is the latent tensor `name` (tensors() naming) fake-quantized somewhere?
  bool is_quantized_tensor(const std::string& name) const {
    if (params_.count(name)) return true;
    return name == (latent_.tied ? "token_embd" : "output") && params_.count("output");
  }

  // Copies the tensors that are never quantized (norms, the embedding lookup).
  void copy_float_tensors() {
    effective_.token_embd = latent_.token_embd;
    effective_.output_norm = latent_.output_norm;
    for (size_t l = 0; l < latent_.layers.size(); ++l) {
      effective_.layers[l].attn_norm = latent_.layers[l].attn_norm;
      effective_.layers[l].ffn_norm = latent_.layers[l].ffn_norm;
    }
  }

  // Maps gradients w.r.t. the effective weights to the latent weights (STE, or LSQ with step
  // size gradients) and, for a tied model, adds the head's gradient to the embedding's.
  void to_latent_gradients(const Params<float>& ge, Params<float>& gl,
                           std::map<std::string, std::vector<float>>& gscale, bool learn,
                           lowbit::qat::LsqGrads& lsq) const {
    const bool shared_table = latent_.tied && params_.count("output");
    gl.token_embd = ge.token_embd;
    gl.output_norm = ge.output_norm;
    for (size_t l = 0; l < gl.layers.size(); ++l) {
      gl.layers[l].attn_norm = ge.layers[l].attn_norm;
      gl.layers[l].ffn_norm = ge.layers[l].ffn_norm;
    }
    for (const auto& name : quantizable_names(latent_)) {
      Mat<float> g = latent_weight(ge, name);
      if (name == "output" && shared_table) g += ge.token_embd;  // both reads of one table
      const Mat<float>& w = latent_weight(latent_, name);
      Mat<float> gx;
      auto it = params_.find(name);
      if (it == params_.end()) {
        gx = g;
      } else if (learn) {
        lowbit::qat::lsq_backward_into(g, w, it->second,
                                       lowbit::qat::lsq_grad_factor(it->second.scheme, w.size()),
                                       lsq);
        gx = lsq.grad_x;
        gscale[name] = lsq.grad_scale;
      } else {
        lowbit::qat::fake_quantize_backward_into(g, w, it->second, gx);
      }
      if (name == "output" && shared_table)
        gl.token_embd = gx;
      else if (name == "output" && latent_.tied)
        gl.token_embd += gx;
      else
        latent_weight(gl, name) = gx;
    }
  }

  Params<float> latent_, effective_;
  std::map<std::string, lowbit::QuantParams> params_;
  bool half_scales_ = true;
};

}  // namespace llama::train
