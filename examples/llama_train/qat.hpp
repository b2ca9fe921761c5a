// qat.hpp: whole-model quantization-aware training of the Llama (fake-quant Linears, STE/LSQ, Adam).
#pragma once

#include "adam.hpp"
#include "train.hpp"

#include <lowbit/core/half.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/qat/fake_quantize.hpp>
#include <lowbit/qat/format_fake_quant.hpp>
#include <lowbit/qat/format_params.hpp>
#include <lowbit/qat/lsq.hpp>

#include <algorithm>
#include <cstdlib>
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

/// The model under QAT: float latent weights, learnable quantization parameters per tensor, and
/// the effective (fake-quantized) weights the forward pass uses, which are exactly what inference
/// runs after export. Two kinds of parameters:
/// - lowbit's own QuantParams (QuantizedMatrix from latent + params dequantizes to the effective
///   weight, run by the packed kernels);
/// - the grid of a GGUF block format (qat::FormatParams: Q4_0 ... Q6_K, or F16 for a tensor
///   whose rows fit no block): the effective weight is bit for bit what the format decodes from
///   export_tensor()'s blocks, so a GGUF file written from them runs exactly the trained model.
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

  /// QAT on GGUF format grids: `formats` maps quantizable_names() entries (and, for an untied
  /// latent model, "token_embd", the lookup table, which GGUF stores apart from the head) to
  /// their FormatParams, typically from a PTQ file's blocks (format_params_from_blocks with the
  /// latent weights at their decode, so step 0 is that file exactly) or a format's plain rounding
  /// (format_params_from_weights). Names not in the map stay float (norms, and an untied
  /// embedding without an entry). A tied latent model with an "output" entry stores one table
  /// in the head's format, which the lookup reads too.
  QatModel(Params<float> latent, std::map<std::string, lowbit::qat::FormatParams> formats)
      : latent_(std::move(latent)), formats_(std::move(formats)) {
    auto names = quantizable_names(latent_);
    if (!latent_.tied) names.push_back("token_embd");
    for (const auto& [name, fp] : formats_) {
      lowbit::detail::require(std::find(names.begin(), names.end(), name) != names.end(),
                              "formats: '{}' is not a quantizable tensor{}", name,
                              name == "token_embd" ? " (the latent model is tied)" : "");
      const Mat<float>& w = latent_weight(latent_, name);
      lowbit::qat::validate(fp, w.rows(), w.cols());
    }
    effective_ = latent_;
    effective_.tied = false;
    effective_.output = latent_.head();
    half_scales_ = false;
    refresh();
  }

  const Params<float>& latent() const { return latent_; }
  const Params<float>& effective() const { return effective_; }
  const std::map<std::string, lowbit::QuantParams>& params() const { return params_; }
  const std::map<std::string, lowbit::qat::FormatParams>& format_params() const { return formats_; }

  /// The stored bytes of tensor `name` (a format_params() entry) in its GGUF type, as a GGUF file
  /// holds them: formats::decode_matrix of them equals the effective weight bit for bit.
  std::vector<uint8_t> export_tensor(const std::string& name) const {
    auto it = formats_.find(name);
    lowbit::detail::require(it != formats_.end(), "name: '{}' has no format parameters", name);
    return lowbit::qat::export_format_blocks(latent_weight(latent_, name), it->second);
  }

  /// Recomputes the effective weights from the latent ones and the current params.
  void refresh() {
    copy_float_tensors();
    for (const auto& name : quantizable_names(latent_)) {
      Mat<float>& eff = effective_weight(name);
      const Mat<float>& w = latent_weight(latent_, name);
      auto it = params_.find(name);
      auto ft = formats_.find(name);
      if (it != params_.end())
        lowbit::qat::fake_quantize_into(w, it->second, eff);
      else if (ft != formats_.end())
        lowbit::qat::format_fake_quantize_into(w, ft->second, eff);
      else
        eff = w;
    }
    auto embd = formats_.find("token_embd");
    if (embd != formats_.end())  // an untied lookup table on its own grid
      lowbit::qat::format_fake_quantize_into(latent_.token_embd, embd->second,
                                             effective_.token_embd);
    // A tied model stores one table: when the head is quantized, the lookup reads it too.
    else if (latent_.tied && is_quantized("output"))
      effective_.token_embd = effective_.output;
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
    std::map<std::string, lowbit::qat::FormatGrads> grad_format;
    for (const auto& [name, fp] : formats_) {
      auto& g = grad_format[name];
      g.grad_scale.assign(fp.scale.size(), 0.0f);
      g.grad_offset.assign(fp.offset.size(), 0.0f);
      g.grad_super_scale.assign(fp.super_scale.size(), 0.0f);
      g.grad_super_min.assign(fp.super_min.size(), 0.0f);
    }
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
      to_latent_gradients(grad_eff, grad_latent, grad_scale, grad_format, opt.lsq, lsq);
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
      for (auto& [name, fp] : formats_) {
        // Sub-block scales and offsets at the step-size rate; d and dmin, which are about
        // 1/hi of the sub-block values they multiply, at that rate over hi (the same relative
        // speed). Plain types (F16) have nothing to learn.
        const lowbit::formats::Format* f = fp.format();
        if (!f) continue;
        const float r = opt.lsq ? opt.scale_lr_ratio : 0.0f;
        auto& g = grad_format[name];
        slots.push_back({fp.scale.data(), g.grad_scale.data(), fp.scale.size(), r});
        if (f->has_offset)
          slots.push_back({fp.offset.data(), g.grad_offset.data(), fp.offset.size(), r});
        if (fp.has_super()) {
          const float hi = float(std::max(std::abs(f->scale_lo), f->scale_hi));
          slots.push_back({fp.super_scale.data(), g.grad_super_scale.data(),
                           fp.super_scale.size(), r / hi});
          if (f->min_hi != 0)
            slots.push_back({fp.super_min.data(), g.grad_super_min.data(), fp.super_min.size(),
                             r / float(f->min_hi)});
        }
      }
      adam.step(slots);
      for (auto& [name, qp] : params_)
        for (float& s : qp.scale) s = std::max(s, 1e-8f);  // a step size must stay positive
      for (auto& [name, fp] : formats_) lowbit::qat::project(fp);  // storable values
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
    if (name == "token_embd") return p.token_embd;
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

  // Has `name` (quantizable_names() or "token_embd") lowbit or format parameters?
  bool is_quantized(const std::string& name) const {
    return params_.count(name) != 0 || formats_.count(name) != 0;
  }

  // Is the latent tensor `name` (tensors() naming) fake-quantized somewhere?
  bool is_quantized_tensor(const std::string& name) const {
    if (is_quantized(name)) return true;
    return name == (latent_.tied ? "token_embd" : "output") && is_quantized("output");
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
                           std::map<std::string, std::vector<float>>& gscale,
                           std::map<std::string, lowbit::qat::FormatGrads>& gformat, bool learn,
                           lowbit::qat::LsqGrads& lsq) const {
    const bool shared_table = latent_.tied && is_quantized("output");
    // Through one tensor's format grid: the STE, and with `learn` its parameters' LSQ gradients.
    auto through_format = [&](const std::string& name, const Mat<float>& g, const Mat<float>& w,
                              Mat<float>& gx) {
      const auto& fp = formats_.at(name);
      if (learn && fp.format()) {
        auto& out = gformat.at(name);
        lowbit::qat::format_lsq_backward_into(g, w, fp, lowbit::qat::format_grad_factor(fp), out);
        gx = out.grad_x;
      } else {
        lowbit::qat::format_fake_quantize_backward_into(g, w, fp, gx);
      }
    };
    gl.token_embd = ge.token_embd;
    if (formats_.count("token_embd"))
      through_format("token_embd", ge.token_embd, latent_.token_embd, gl.token_embd);
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
      if (formats_.count(name)) {
        through_format(name, g, w, gx);
      } else if (it == params_.end()) {
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
  std::map<std::string, lowbit::qat::FormatParams> formats_;
  bool half_scales_ = true;
};

}  // namespace llama::train
