// study.hpp: the PTQ / QAT / mixed-precision study on a llama GGUF: storage plans, calibration,
// quantized models on lowbit's kernels, perplexity rows and the headline figures.
#pragma once

#include "../llama/backends.hpp"
#include "../llama/engine.hpp"
#include "../llama/perplexity.hpp"
#include "../llama/tokenizer.hpp"
#include "../llama_train/fisher.hpp"
#include "../llama_train/qat.hpp"

#include <lowbit/core/quantize.hpp>
#include <lowbit/core/quantized_matrix.hpp>
#include <lowbit/gemm/linear.hpp>
#include <lowbit/gemm/packed_weights.hpp>
#include <lowbit/mixed/closed_form.hpp>
#include <lowbit/mixed/measure.hpp>
#include <lowbit/mixed/measured.hpp>
#include <lowbit/mixed/sensitivity.hpp>
#include <lowbit/ptq/calibration.hpp>
#include <lowbit/ptq/gamma_search.hpp>
#include <lowbit/ptq/gptq.hpp>
#include <lowbit/ptq/rtn.hpp>

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace study {

using lowbit::Index;
using lowbit::MatrixXfR;
using lowbit::MatrixXiR;

/// How one quantizable tensor is stored: integer codes + params, or float when `codes` is empty.
struct Stored {
  MatrixXiR codes;
  lowbit::QuantParams params;
  std::string method;  ///< "rtn", "gamma", "gptq", "qat"
  bool quantized() const { return codes.size() > 0; }
};

/// Storage of every quantizable tensor, by name ("blk.N.attn_q", ..., "output"); absent = float.
using Plan = std::map<std::string, Stored>;

/// The head shares the embedding (absent output.weight, or an identical copy as in stories260K).
inline bool is_tied(const llama::Weights& w) {
  return w.output.size() == 0 || (w.output.rows() == w.token_embd.rows() &&
                                  w.output.cols() == w.token_embd.cols() && w.output == w.token_embd);
}

/// Names of the tensors a plan may quantize: the seven Linears of every block, then the head.
inline std::vector<std::string> quantizable_names(const llama::Weights& w) {
  std::vector<std::string> out;
  for (int l = 0; l < w.config.n_layers; ++l)
    for (const auto& n : llama::linear_names()) out.push_back("blk." + std::to_string(l) + "." + n);
  out.push_back("output");
  return out;
}

/// Layer index and linear index (linear_names() order) of a block tensor name.
inline std::pair<int, int> block_index(const std::string& name) {
  const auto dot = name.find('.', 4);
  const int layer = std::stoi(name.substr(4, dot - 4));
  const std::string lin = name.substr(dot + 1);
  const auto& names = llama::linear_names();
  for (int k = 0; k < int(names.size()); ++k)
    if (names[size_t(k)] == lin) return {layer, k};
  lowbit::detail::fail("name: '{}' is not a block Linear", name);
}

/// The float weight of a quantizable tensor.
inline const MatrixXfR& tensor(const llama::Weights& w, const std::string& name) {
  if (name == "output") return w.output;
  const auto [l, k] = block_index(name);
  return llama::linear_weight(w.layers[size_t(l)], k);
}

/// The calibration key whose inputs a tensor reads (q/k/v share one input, as do gate/up).
inline std::string input_key(const std::string& name) {
  if (name == "output") return name;
  const auto [l, k] = block_index(name);
  static const char* shared[] = {"attn_q", "attn_q", "attn_q", "attn_output",
                                 "ffn_gate", "ffn_down", "ffn_gate"};
  return "blk." + std::to_string(l) + "." + shared[k];
}

/// The stored layer on lowbit's packed kernels, by default with fp32 activations (weight-only),
/// as trained.
inline std::shared_ptr<const llama::Linear> make_packed_linear(
    const Stored& s, lowbit::ActivationQuant activations = lowbit::ActivationQuant::float32) {
  return llama::make_lowbit_linear(s.codes, s.params, activations);
}

/// Number of weights the model stores (norm gains included; a tied table counted once).
inline Index weight_count(const llama::Weights& w) {
  Index n = w.token_embd.size() + w.output_norm.size() + (is_tied(w) ? 0 : w.output.size());
  for (const auto& L : w.layers) {
    n += L.attn_norm.size() + L.ffn_norm.size();
    for (int k = 0; k < 7; ++k) n += llama::linear_weight(L, k).size();
  }
  return n;
}

/// Every stored byte of the model under `plan`: quantized tensors as QuantizedMatrix counts them
/// (packed codes, float32 scales, zero points), float tensors and norm gains at 4 bytes a weight.
/// A tied table is stored once (quantized when the head is); an untied embedding is quantized
/// when the plan has a "token_embd" entry (e.g. after a rotation untied the head).
inline size_t model_bytes(const llama::Weights& w, const Plan& plan) {
  size_t n = 4 * size_t(w.output_norm.size());
  for (const auto& L : w.layers) n += 4 * size_t(L.attn_norm.size() + L.ffn_norm.size());
  if (!is_tied(w)) {
    auto e = plan.find("token_embd");
    n += e != plan.end() && e->second.quantized()
             ? lowbit::quantized_bytes(e->second.params.scheme, w.token_embd.rows(), w.token_embd.cols())
             : 4 * size_t(w.token_embd.size());
  }
  for (const auto& name : quantizable_names(w)) {
    const MatrixXfR& t = tensor(w, name);
    auto it = plan.find(name);
    n += it != plan.end() && it->second.quantized()
             ? lowbit::quantized_bytes(it->second.params.scheme, t.rows(), t.cols())
             : 4 * size_t(t.size());
  }
  return n;
}

/// The engine model that runs `plan`: quantized Linears on lowbit's packed kernels with
/// `activations` (float32: weight-only; int8: W8A8/W4A8 with per-token INT8 activations). For a
/// tied model whose head is quantized the lookup reads the same dequantized table; an untied
/// embedding reads its own dequantized table when the plan quantizes "token_embd".
inline llama::Model build_model(const llama::Weights& w, const Plan& plan,
                                lowbit::ActivationQuant activations = lowbit::ActivationQuant::float32) {
  llama::Weights run = w;
  auto out = plan.find("output");
  if (is_tied(w) && out != plan.end() && out->second.quantized())
    run.token_embd = lowbit::dequantize(out->second.codes, out->second.params);
  auto emb = plan.find("token_embd");
  if (!is_tied(w) && emb != plan.end() && emb->second.quantized())
    run.token_embd = lowbit::dequantize(emb->second.codes, emb->second.params);
  llama::Model m(run);
  for (const auto& [name, s] : plan) {
    if (!s.quantized() || name == "token_embd") continue;
    if (name == "output") {
      m.set_output(make_packed_linear(s, activations));
    } else {
      const auto [l, k] = block_index(name);
      m.set_linear(l, k, make_packed_linear(s, activations));
    }
  }
  return m;
}

/// Perplexity of a model under the project's protocol (evaluation chunks, fresh context each).
inline llama::PerplexityResult perplexity(llama::Model& m, const std::vector<std::string>& chunks,
                                          const llama::Tokenizer& tok,
                                          const llama::PerplexityOptions& opt) {
  return llama::evaluate_perplexity(chunks, tok, [&](const std::vector<int>& ids) {
    m.reset();
    return m.forward(ids);
  }, opt);
}

/// Calibration statistics of every Linear input (keys as input_key()), from the FP32 model run
/// over `sequences` until `max_tokens` tokens.
inline std::map<std::string, lowbit::ptq::Calibration> capture_calibration(
    const llama::Weights& w, const std::vector<std::vector<int>>& sequences, long max_tokens) {
  std::map<std::string, lowbit::ptq::Calibration> calib;
  llama::Model m(w);
  m.set_capture([&](int layer, const std::string& name, const MatrixXfR& x) {
    const std::string key = layer < 0 ? name : "blk." + std::to_string(layer) + "." + name;
    calib.try_emplace(key, x.cols()).first->second.add(x);
  });
  long tokens = 0;
  for (const auto& s : sequences) {
    if (tokens >= max_tokens) break;
    m.reset();
    m.forward(s);
    tokens += long(s.size());
  }
  return calib;
}

/// One tensor quantized by a PTQ method ("rtn", "gamma", "gptq") in `scheme`.
inline Stored quantize_tensor(const MatrixXfR& W, const lowbit::Scheme& scheme,
                              const std::string& method, const lowbit::ptq::Calibration& calib) {
  lowbit::ptq::Result r;
  if (method == "rtn")
    r = lowbit::ptq::rtn(W, scheme);
  else if (method == "gamma")
    r = lowbit::ptq::search_gamma(W, scheme, calib);
  else if (method == "gptq")
    r = lowbit::ptq::gptq(W, scheme, calib);
  else
    lowbit::detail::fail("method: expected rtn, gamma or gptq, got '{}'", method);
  return {std::move(r.codes), std::move(r.params), method};
}

/// An embedding table (a lookup, no calibration input) in `scheme`: round to nearest for "rtn",
/// else the γ-search of its weight error (GPTQ needs a layer input, which a lookup has not).
inline Stored quantize_embedding(const MatrixXfR& E, const lowbit::Scheme& scheme, const std::string& method) {
  lowbit::ptq::Result r = method == "rtn" ? lowbit::ptq::rtn(E, scheme) : lowbit::ptq::search_gamma(E, scheme);
  return {std::move(r.codes), std::move(r.params), method == "rtn" ? "rtn" : "gamma"};
}

/// Every quantizable tensor at one scheme and method; an untied embedding too (quantize_embedding)
/// when `with_embedding`.
inline Plan uniform_plan(const llama::Weights& w,
                         const std::map<std::string, lowbit::ptq::Calibration>& calib,
                         const lowbit::Scheme& scheme, const std::string& method,
                         bool with_embedding = false) {
  Plan plan;
  for (const auto& name : quantizable_names(w))
    plan[name] = quantize_tensor(tensor(w, name), scheme, method, calib.at(input_key(name)));
  if (with_embedding && !is_tied(w)) plan["token_embd"] = quantize_embedding(w.token_embd, scheme, method);
  return plan;
}

/// The calibration half split for choosing by measurement: `validation` is its tail, the last
/// chunks holding at least `predictions` next-token predictions; `fit` the chunks before them
/// (calibration statistics and PTQ use only `fit`).
struct ValidationSplit {
  std::vector<std::string> fit, validation;
  std::vector<std::vector<int>> fit_sequences;
  long validation_predictions = 0;
};
inline ValidationSplit split_validation(const std::vector<std::string>& calibration,
                                        const llama::Tokenizer& tok, int context, long predictions) {
  lowbit::detail::require(predictions > 0, "predictions: expected > 0, got {}", predictions);
  ValidationSplit v;
  size_t cut = calibration.size();
  while (cut > 0 && v.validation_predictions < predictions) {
    --cut;
    const auto ids = llama::chunk_tokens(tok, calibration[cut], context);
    if (ids.size() >= 2) v.validation_predictions += long(ids.size()) - 1;
  }
  lowbit::detail::require(cut > 0 && v.validation_predictions >= predictions,
                          "calibration: {} chunks cannot hold {} validation predictions and a fit part",
                          calibration.size(), predictions);
  v.fit.assign(calibration.begin(), calibration.begin() + long(cut));
  v.validation.assign(calibration.begin() + long(cut), calibration.end());
  for (const auto& c : v.fit) v.fit_sequences.push_back(llama::chunk_tokens(tok, c, context));
  return v;
}

inline std::string method_name(lowbit::mixed::Method m) {
  switch (m) {
    case lowbit::mixed::Method::rtn: return "rtn";
    case lowbit::mixed::Method::gamma_search: return "gamma";
    case lowbit::mixed::Method::gptq: return "gptq";
  }
  return "rtn";
}

/// The mixed layers (weights, Gram matrices of their inputs, α and σ²) of every quantizable tensor.
/// With `fisher`, α is the activation energy times the layer's mean output Fisher (loss per
/// unit of weight error, so the closed form compares layers in loss).
inline std::vector<lowbit::mixed::Layer> mixed_layers(
    const llama::Weights& w, const std::map<std::string, lowbit::ptq::Calibration>& calib,
    int group_size, const std::map<std::string, Eigen::VectorXd>& fisher = {}) {
  std::vector<lowbit::mixed::Layer> layers;
  for (const auto& name : quantizable_names(w)) {
    layers.push_back(lowbit::mixed::describe_layer(name, tensor(w, name),
                                                   calib.at(input_key(name)).gram(), 1.0f,
                                                   lowbit::Scheme::per_group(8, group_size)));
    auto it = fisher.find(name);
    if (it != fisher.end()) layers.back().alpha *= it->second.mean();
  }
  return layers;
}

/// Diagonal empirical Fisher of every Linear's output (llama_train/fisher.hpp).
using llama::train::output_fisher;

/// The mixed allocator's distortion of a candidate: the layer-output error of the candidate's
/// PTQ method, sum over output channels r of fisher_r * (W - Ŵ)_r XᵀX (W - Ŵ)_rᵀ — the
/// second-order loss increase, comparable across layers (plain trace((W - Ŵ) XᵀX (W - Ŵ)ᵀ) when
/// `fisher` is empty).
inline lowbit::mixed::MeasureFn ptq_measure(
    const std::map<std::string, lowbit::ptq::Calibration>& calib,
    const std::map<std::string, Eigen::VectorXd>& fisher) {
  return [&calib, &fisher](const lowbit::mixed::Layer& l,
                           const lowbit::mixed::Candidate& c) -> double {
    if (c.keeps_float()) return 0.0;
    const Stored s = quantize_tensor(l.weight, lowbit::mixed::scheme_of(c), method_name(c.method),
                                     calib.at(input_key(l.name)));
    const MatrixXfR w_hat = lowbit::dequantize(s.codes, s.params);
    auto it = fisher.find(l.name);
    if (it == fisher.end()) return lowbit::mixed::weighted_output_error(l.weight, w_hat, l.gram);
    const Eigen::MatrixXd d = l.weight.cast<double>() - w_hat.cast<double>();
    const Eigen::VectorXd rows = (d * l.gram).cwiseProduct(d).rowwise().sum();
    return std::max(0.0, it->second.dot(rows));
  };
}

/// The plan an allocation describes (each layer quantized at its width by its method).
inline Plan plan_of(const llama::Weights& w, const lowbit::mixed::Allocation& a,
                    const std::map<std::string, lowbit::ptq::Calibration>& calib) {
  Plan plan;
  for (const auto& c : a.layers) {
    if (c.candidate.keeps_float()) continue;
    plan[c.name] = quantize_tensor(tensor(w, c.name), lowbit::mixed::scheme_of(c.candidate),
                                   method_name(c.candidate.method), calib.at(input_key(c.name)));
  }
  return plan;
}

/// Bytes of the allocated tensors only (what a mixed budget covers) for a uniform scheme.
inline size_t allocated_bytes(const llama::Weights& w, const lowbit::Scheme& s) {
  size_t n = 0;
  for (const auto& name : quantizable_names(w)) {
    const MatrixXfR& t = tensor(w, name);
    n += lowbit::quantized_bytes(s, t.rows(), t.cols());
  }
  return n;
}

/// QAT from an initial plan: the latent weights start at the plan's dequantized weights (so
/// step 0 is exactly that PTQ model), every quantized tensor is fake-quantized with its params
/// (STE, LSQ step sizes), the rest of the model (norm gains) trains in float. Returns the
/// exported plan (codes of the trained latent weights under the learned params) and, in
/// `trained`, the float weights (norms) to run it with.
inline Plan run_qat(const llama::Weights& w, const Plan& init,
                    const std::vector<std::vector<int>>& sequences,
                    const llama::train::QatOptions& opt, llama::Weights& trained,
                    const std::function<void(const llama::train::QatStep&)>& on_step = {}) {
  using namespace llama::train;
  const Params<float> teacher = from_weights<float>(w);
  Params<float> latent = teacher;
  std::map<std::string, lowbit::QuantParams> params;
  for (const auto& [name, s] : init) {
    if (!s.quantized()) continue;
    const MatrixXfR deq = lowbit::dequantize(s.codes, s.params);
    if (name == "output")
      (latent.tied ? latent.token_embd : latent.output) = deq;
    else
      for (auto& [n2, m] : linear_weights(latent, false))
        if (n2 == name) *m = deq;
    params[name] = s.params;
  }
  QatModel model(std::move(latent), std::move(params));
  model.train(sequences, &teacher, opt, on_step);
  trained = to_weights(model.latent());
  Plan out;
  auto& lat = const_cast<Params<float>&>(model.latent());
  for (const auto& [name, qp] : model.params()) {
    const Mat<float>* m = nullptr;
    if (name == "output") m = &lat.head();
    for (auto& [n2, m2] : linear_weights(lat, false))
      if (n2 == name) m = m2;
    out[name] = {lowbit::quantize(*m, qp), qp, "qat"};
  }
  return out;
}

/// One row of the study table.
struct Row {
  std::string kind;    ///< fp32, ptq, qat, mixed_ptq, mixed_qat; with --rotate ptq_a8, rotation
  std::string method;  ///< e.g. "w4_g32_gptq", "mixed_3.5_measured_gptq", "w3_g32_qat"
  int weight_bits = 32;  ///< nominal width (mixed: the rounded mean of the allocated widths)
  int group_size = 0;
  double bits_per_weight = 32;  ///< 8 * bytes / stored weights (everything counted)
  size_t bytes = 0;
  double size_reduction_pct = 0;
  long predictions = 0;
  double mean_nll = 0, ppl = 0, delta_ppl_pct = 0, tokens_per_s = 0;
  bool best = true;  ///< shown in the printed table (best of its kind at its size)
  // With --rotate: how the FP32 weights were transformed before quantization, the activations,
  // the perplexity on the calibration half's held-out tail and whether that chose this row.
  std::string transform = "none";   ///< "none", "fold", "fold+hadamard(seed 0)", ...
  std::string activations = "fp32";  ///< "fp32" (weight-only) or "int8" (W8A8 / W4A8)
  double val_ppl = std::numeric_limits<double>::quiet_NaN();
  bool chosen = false;
};

/// The headline figures the study reports, measured on the rows.
struct Headline {
  double max_reduction_within_6 = std::numeric_limits<double>::quiet_NaN();
  std::string method_within_6;
  double max_reduction_within_3 = std::numeric_limits<double>::quiet_NaN();
  std::string method_within_3;
  double delta_at_68 = std::numeric_limits<double>::quiet_NaN();  ///< best ΔPPL at >= 68% smaller
  std::string method_at_68;
};

inline Headline headline(const std::vector<Row>& rows) {
  Headline h;
  for (const auto& r : rows) {
    if (r.kind == "fp32") continue;
    if (r.delta_ppl_pct <= 6.0 &&
        (std::isnan(h.max_reduction_within_6) || r.size_reduction_pct > h.max_reduction_within_6)) {
      h.max_reduction_within_6 = r.size_reduction_pct;
      h.method_within_6 = r.method;
    }
    if (r.delta_ppl_pct <= 3.0 &&
        (std::isnan(h.max_reduction_within_3) || r.size_reduction_pct > h.max_reduction_within_3)) {
      h.max_reduction_within_3 = r.size_reduction_pct;
      h.method_within_3 = r.method;
    }
    if (r.size_reduction_pct >= 68.0 && (std::isnan(h.delta_at_68) || r.delta_ppl_pct < h.delta_at_68)) {
      h.delta_at_68 = r.delta_ppl_pct;
      h.method_at_68 = r.method;
    }
  }
  return h;
}

}  // namespace study
