// llama_quant.cpp: the PTQ study on a llama GGUF: quantizes every Linear with each method, runs it
// on lowbit's kernels and prints size, perplexity and speed (optionally as JSON).
#include "llama/backends.hpp"
#include "llama/calibrate.hpp"
#include "llama/engine.hpp"
#include "llama/perplexity.hpp"

#include <lowbit/ptq/awq.hpp>
#include <lowbit/ptq/gamma_search.hpp>
#include <lowbit/ptq/gptq.hpp>
#include <lowbit/ptq/rtn.hpp>
#include <lowbit/ptq/smoothquant.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <fstream>
#include <sstream>

namespace {

const std::vector<std::string> kDefaultMethods = {
    "fp32",          "w8a8",         "w8a8_smoothquant", "w4_g32_rtn",    "w4_g32_gamma",
    "w4_g32_gptq",   "w4_g32_awq",   "w4a8_g32_rtn",     "w4a8_g32_gamma", "w4a8_g32_gptq",
    "w4a8_g32_awq",  "w3_g32_rtn",   "w3_g32_gamma",     "w3_g32_gptq",    "w3_g32_awq"};
const std::vector<std::string> kAlgorithms = {"rtn", "gamma", "gptq", "awq", "smoothquant"};

/// A study row's recipe: a backend (bits, groups, activations) and a weight algorithm.
struct Method {
  std::string name, algorithm = "rtn";
  llama::BackendSpec spec;
};

Method parse_method(const std::string& name) {
  Method m;
  m.name = name;
  std::string backend = name;
  const auto cut = name.rfind('_');
  if (cut != std::string::npos &&
      std::find(kAlgorithms.begin(), kAlgorithms.end(), name.substr(cut + 1)) != kAlgorithms.end()) {
    m.algorithm = name.substr(cut + 1);
    backend = name.substr(0, cut);
  }
  m.spec = llama::parse_backend(backend);
  lowbit::detail::require(!m.spec.is_fp32() || m.algorithm == "rtn",
                          "--methods: '{}': fp32 takes no algorithm", name);
  return m;
}

/// Progress on stderr, only when it is a terminal.
void progress(const std::string& what, long done, long total) {
  static const bool tty = isatty(2);
  if (!tty) return;
  fmt::print(stderr, "\r{:<40} {:>7}/{:<7}", what, done, total);
  if (done >= total) fmt::print(stderr, "\r{:<60}\r", "");
}

/// Codes and parameters of one quantized weight, and the activation divisor s of AWQ and
/// SmoothQuant (the kernels then see x / s and weights quantized from W·diag(s)).
struct QuantizedWeight {
  lowbit::MatrixXiR codes;
  lowbit::QuantParams params;
  Eigen::VectorXf divisor;
};

QuantizedWeight quantize_weight(const lowbit::MatrixXfR& W, const Method& m,
                                const lowbit::ptq::Calibration* calib) {
  const lowbit::Scheme scheme = m.spec.scheme();
  if (calib == nullptr || m.algorithm == "rtn") {
    auto r = lowbit::ptq::rtn(W, scheme);
    return {std::move(r.codes), std::move(r.params), {}};
  }
  if (m.algorithm == "smoothquant") {
    const auto sm = lowbit::ptq::smoothquant(W, *calib);
    auto r = lowbit::ptq::rtn(sm.weight, scheme);
    return {std::move(r.codes), std::move(r.params), sm.act_divisor};
  }
  if (m.algorithm == "awq") {
    auto a = lowbit::ptq::awq(W, scheme, *calib);
    return {std::move(a.quant.codes), std::move(a.quant.params), a.act_divisor};
  }
  auto r = m.algorithm == "gamma" ? lowbit::ptq::search_gamma(W, scheme, *calib)
                                  : lowbit::ptq::gptq(W, scheme, *calib);
  return {std::move(r.codes), std::move(r.params), {}};
}

struct Row {
  std::string method, algorithm, activations;
  int weight_bits = 32, group_size = 0;
  double bits_per_weight = 32, linear_bits_per_weight = 32, size_reduction = 1;
  size_t bytes = 0;
  llama::PerplexityResult ppl;
  double delta_ppl_pct = 0;
  double quantize_seconds = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"PTQ study: quantize every Linear of a llama GGUF with each method; report size, "
               "perplexity (the project's protocol) and tokens/s on lowbit's kernels"};
  std::string model_path, text_path, json_path;
  std::vector<std::string> methods = kDefaultMethods;
  int context = 512;
  long min_predictions = 20000, calib_tokens = 20000;
  bool all = false, quantize_head = false;
  app.add_option("--model", model_path, "llama GGUF file")->required()->check(CLI::ExistingFile);
  app.add_option("--text", text_path, "text: blank-line chunks; first half calibrates, second half evaluates")
      ->required()->check(CLI::ExistingFile);
  app.add_option("--methods", methods,
                 "methods: fp32 or <backend>[_<rtn|gamma|gptq|awq|smoothquant>], backend "
                 "w<2..8>[a8][_g<G>] (e.g. w8a8, w8a8_smoothquant, w4_g32_gptq, w4a8_g32_awq, w3_g32_gamma)")->delimiter(',');
  app.add_option("--ctx", context, "training context: positions scored per chunk")->check(CLI::Range(2, 1 << 20));
  app.add_option("--min-predictions", min_predictions, "score evaluation chunks until this many predictions")
      ->check(CLI::PositiveNumber);
  app.add_flag("--all", all, "score every evaluation chunk");
  app.add_option("--calib-tokens", calib_tokens, "calibration tokens (from the calibration half)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--quantize-head", quantize_head, "quantize the output head too (same method)");
  app.add_option("--json", json_path, "also write the rows as JSON to this file");
  CLI11_PARSE(app, argc, argv);

  try {
    Eigen::setNbThreads(1);
    std::vector<Method> recipe;
    for (const auto& name : methods) recipe.push_back(parse_method(name));
    const auto file = lowbit::io::GgufFile::open(model_path);
    const llama::Weights w = llama::load_weights(file, context);
    const llama::Tokenizer tok = llama::Tokenizer::from_gguf(file);
    std::stringstream text;
    text << std::ifstream(text_path, std::ios::binary).rdbuf();
    const auto halves = llama::split_halves(llama::split_chunks(text.str()));
    lowbit::detail::require(!halves.calibration.empty() && !halves.evaluation.empty(),
                            "--text: expected at least two blank-line chunks");

    // Weights outside the Linears stay FP32 (embedding, norms; the head unless --quantize-head).
    // A tied head (no output.weight in the file) is stored once, as the embedding.
    const auto& c = w.config;
    size_t n_weights = size_t(w.token_embd.size() + w.output_norm.size()) +
                       (w.tied_output ? 0 : size_t(w.output.size()));
    for (const auto& L : w.layers) {
      n_weights += size_t(L.attn_norm.size() + L.ffn_norm.size());
      for (int k = 0; k < 7; ++k) n_weights += size_t(llama::linear_weight(L, k).size());
    }
    size_t n_linear = 0;
    for (const auto& L : w.layers)
      for (int k = 0; k < 7; ++k) n_linear += size_t(llama::linear_weight(L, k).size());
    size_t other_bytes = 4 * size_t(w.token_embd.size() + w.output_norm.size());
    for (const auto& L : w.layers) other_bytes += 4 * size_t(L.attn_norm.size() + L.ffn_norm.size());
    const double fp32_bytes = 4.0 * double(n_weights);

    llama::Model model(w);
    llama::CalibrationSet calib;
    bool need_calib = false;
    for (const auto& m : recipe) need_calib |= m.algorithm != "rtn";
    if (need_calib)
      calib = llama::collect_calibration(model, tok, halves.calibration, context, calib_tokens,
                                         [](long d, long t) { progress("calibrating", std::min(d, t), t); });

    fmt::print("model {}: dim {}, hidden {}, {} layers, {}/{} heads, vocab {}, context {}; {} weights\n",
               model_path, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
               context, n_weights);
    fmt::print("text {}: {} calibration chunks ({} tokens used), {} evaluation chunks\n\n", text_path,
               halves.calibration.size(), need_calib ? calib.begin()->second.tokens() : 0,
               halves.evaluation.size());
    fmt::print("{:<18} {:>5} {:>8} {:>8} {:>10} {:>7} {:>8} {:>9} {:>8} {:>9}\n", "method", "bits",
               "bits/w", "lin b/w", "bytes", "vs fp32", "preds", "PPL", "dPPL %", "tokens/s");

    std::vector<Row> rows;
    double base_ppl = 0;
    for (const auto& m : recipe) {
      Row r;
      r.method = m.name;
      r.algorithm = m.spec.is_fp32() ? "none" : m.algorithm;
      r.weight_bits = m.spec.bits;
      r.group_size = m.spec.group_size;
      r.activations = std::string(lowbit::to_string(m.spec.activations));
      llama::Model q(w);
      const auto t0 = std::chrono::steady_clock::now();
      if (!m.spec.is_fp32()) {
        int done = 0;
        const int total = c.n_layers * 7 + (quantize_head ? 1 : 0);
        for (int l = 0; l < c.n_layers; ++l)
          for (int k = 0; k < 7; ++k) {
            const auto& W = llama::linear_weight(w.layers[size_t(l)], k);
            const auto it = calib.find({l, llama::input_name(k)});
            const auto qw = quantize_weight(W, m, it == calib.end() ? nullptr : &it->second);
            q.set_linear(l, k, llama::make_lowbit_linear(qw.codes, qw.params, m.spec.activations, qw.divisor));
            progress(m.name + " quantizing", ++done, total);
          }
        if (quantize_head) {
          const auto it = calib.find({-1, "output"});
          const auto qw = quantize_weight(w.output, m, it == calib.end() ? nullptr : &it->second);
          q.set_output(llama::make_lowbit_linear(qw.codes, qw.params, m.spec.activations, qw.divisor));
          progress(m.name + " quantizing", ++done, total);
        }
      }
      r.quantize_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      r.bytes = q.linear_bytes(quantize_head || !w.tied_output) + other_bytes;
      r.bits_per_weight = 8.0 * double(r.bytes) / double(n_weights);
      r.linear_bits_per_weight = 8.0 * double(q.linear_bytes(false)) / double(n_linear);
      r.size_reduction = fp32_bytes / double(r.bytes);
      llama::PerplexityOptions opt;
      opt.context = context;
      opt.min_predictions = min_predictions;
      opt.all = all;
      r.ppl = llama::evaluate_perplexity(halves.evaluation, tok, [&](const std::vector<int>& t) {
        q.reset();
        return q.forward(t);
      }, opt, [&](long d, long t) { progress(m.name + " scoring", d, t); });
      if (rows.empty() || m.spec.is_fp32()) base_ppl = m.spec.is_fp32() ? r.ppl.ppl : base_ppl;
      r.delta_ppl_pct = base_ppl > 0 ? 100.0 * (r.ppl.ppl / base_ppl - 1.0) : 0.0;
      fmt::print("{:<18} {:>5} {:>8.3f} {:>8.3f} {:>10} {:>6.2f}x {:>8} {:>9.4f} {:>+8.2f} {:>9.0f}\n",
                 r.method, r.weight_bits, r.bits_per_weight, r.linear_bits_per_weight, r.bytes, r.size_reduction, r.ppl.predictions,
                 r.ppl.ppl, r.delta_ppl_pct, r.ppl.tokens_per_s);
      std::fflush(stdout);
      rows.push_back(r);
    }
    if (base_ppl == 0) fmt::print("(no fp32 row: dPPL % is not computed)\n");
    fmt::print("\nbits/w and bytes count every weight (embedding, norms{} in FP32) with codes, float32 "
               "scales and AWQ/SmoothQuant divisors; lin b/w counts the block Linears only.\n"
               "PPL over {} evaluation predictions; isa {}\n",
               quantize_head ? "" : ", head", rows.empty() ? 0 : rows[0].ppl.predictions,
               lowbit::cpu::to_string(lowbit::cpu::active_isa()));

    if (!json_path.empty()) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& r : rows)
        out.push_back({{"method", r.method}, {"algorithm", r.algorithm}, {"weight_bits", r.weight_bits},
                       {"group_size", r.group_size}, {"activations", r.activations},
                       {"bits_per_weight", r.bits_per_weight}, {"bytes", r.bytes},
                       {"linear_bits_per_weight", r.linear_bits_per_weight},
                       {"size_reduction", r.size_reduction}, {"predictions", r.ppl.predictions},
                       {"mean_nll", r.ppl.mean_nll}, {"ppl", r.ppl.ppl},
                       {"delta_ppl_pct", base_ppl > 0 ? nlohmann::json(r.delta_ppl_pct) : nlohmann::json()},
                       {"tokens_per_s", r.ppl.tokens_per_s}, {"quantize_seconds", r.quantize_seconds}});
      std::ofstream f(json_path);
      lowbit::detail::require(bool(f), "--json: cannot write '{}'", json_path);
      f << out.dump(2) << "\n";
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "llama_quant: {}\n", e.what());
    return 1;
  }
}
