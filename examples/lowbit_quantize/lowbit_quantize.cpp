// lowbit_quantize.cpp: lowbit-quantize, a llama GGUF and a calibration text in, a quantized GGUF
// out that llama.cpp loads as it is (GPTQ, AWQ, γ-search or the formats' own rounding on the exact
// grids of the GGUF block formats; a uniform target or a measured bits-per-weight budget).
#if defined(__GNUC__) && !defined(__clang__)
// Built for an AVX-512 host (-march=native, as scripts/bench-quantize.sh builds it), GCC 12 flags
// the deliberately undefined vectors inside its own intrinsics (_mm512_undefined_*) where Eigen's
// AVX-512 code is inlined; the diagnostic must be off before those headers are read.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "quantize.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <thread>

namespace {

/// Samples /proc/self/status RssAnon every 20 ms; keeps the peak.
class RssSampler {
 public:
  RssSampler() : thread_([this] {
      while (!stop_) {
        peak_ = std::max(peak_.load(), lbq::detail::rss_anon_kb());
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }) {}
  ~RssSampler() { stop(); }
  long stop() {
    if (!stop_.exchange(true)) thread_.join();
    peak_ = std::max(peak_.load(), lbq::detail::rss_anon_kb());
    return peak_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<long> peak_{0};
  std::thread thread_;
};

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string duration(double s) {
  if (!(s >= 0) || s > 1e7) return "?";
  const long t = long(s + 0.5);
  return t >= 3600 ? fmt::format("{}h{:02}m", t / 3600, t / 60 % 60)
                   : t >= 60 ? fmt::format("{}m{:02}s", t / 60, t % 60) : fmt::format("{}s", t);
}

std::string shape(const std::vector<uint64_t>& ne) {
  std::string s;
  for (size_t i = ne.size(); i-- > 0;) s += (s.empty() ? "" : "x") + std::to_string(ne[i]);
  return s;
}

nlohmann::json to_json(const lbq::RunReport& r, long peak_kb, const std::string& load0,
                       const std::string& load1, int threads) {
  using nlohmann::json;
  const auto num = [](double v) { return std::isnan(v) ? json(nullptr) : json(v); };
  json t = json::array();
  for (const auto& x : r.tensors)
    t.push_back({{"name", x.name}, {"shape", x.ne}, {"type", x.type}, {"wanted", x.wanted},
                 {"rule", x.rule}, {"method", x.method}, {"bytes", x.bytes}, {"weights", x.weights},
                 {"bits_per_weight", x.bits_per_weight()}, {"relative_output_error", num(x.rel_error)},
                 {"quantized", x.quantizable}});
  json c = json::array();
  for (const auto& x : r.candidates)
    c.push_back({{"transform", x.transform}, {"validation_ppl", num(x.val_ppl)},
                 {"validation_predictions", x.val_predictions}, {"chosen", x.chosen}});
  return {{"model", r.model},
          {"out", r.out},
          {"method", r.method},
          {"target", r.target},
          {"allocator", r.allocator},
          {"distortion", r.distortion},
          {"calibration", r.calibration},
          {"calibration_tokens", r.calib_tokens},
          {"calibration_sequences", r.calib_sequences},
          {"tokens_available", r.tokens_available},
          {"tokens_needed", r.tokens_needed},
          {"tensors", t},
          {"fallbacks", r.fallbacks},
          {"file_bytes", r.file_bytes},
          {"input_bytes", r.input_bytes},
          {"quantized_bytes", r.quantized_bytes},
          {"quantized_weights", r.quantized_weights},
          {"quantized_bits_per_weight", r.quantized_bits_per_weight()},
          {"budget_bytes", r.budget_bytes},
          {"allocation_exact", r.allocation_exact},
          {"allocation_distortion", num(r.allocation_distortion)},
          {"rotation", r.rotation},
          {"rotation_candidates", c},
          {"validation_ppl", num(r.val_ppl)},
          {"seconds", r.seconds},
          {"threads", threads},
          {"peak_rss_anon_kb", peak_kb},
          {"load_average_start", load0},
          {"load_average_end", load1}};
}

}  // namespace

int main(int argc, char** argv) {
  // Large matrices come from mmap and go back to the system when freed (an honest RssAnon).
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 8 << 20);
  CLI::App app{"lowbit-quantize: a llama GGUF and a calibration text in, a quantized GGUF that "
               "llama.cpp runs out (GPTQ/AWQ/γ-search on the exact GGUF grids)"};
  lbq::Options o;
  app.add_option("--model", o.model, "llama GGUF to quantize (F32/F16/BF16 or any block format)")->required();
  app.add_option("--calib", o.calib, "calibration text: the first half of its blank-line chunks is used")->required();
  app.add_option("--out", o.out, "output GGUF (written to a temporary name, renamed when complete)")->required();
  auto* type = app.add_option("--type", o.type, "every block Linear in this type (Q4_K, Q4_0, ...)");
  auto* bpw = app.add_option("--bpw", o.bpw,
                             "bits per weight over all quantized tensors (exact bytes, never over), or a "
                             "type name: the size of uniform --type T; types chosen per tensor");
  type->excludes(bpw);
  app.add_option("--method", o.method, "gptq, awq, gamma or rtn (the format's plain rounding)")
      ->capture_default_str();
  app.add_option("--types", o.types, "types --bpw may choose from")->delimiter(',')->capture_default_str();
  app.add_option("--keep", o.keep, "REGEX=TYPE: tensors whose name matches get TYPE (repeatable)");
  app.add_option("--allocator", o.allocator, "measured (exact knapsack over measured errors) or "
                                             "closed-form (fast)")->capture_default_str();
  app.add_flag("--calib-fp32", o.calib_fp32, "calibrate every block on FP32 inputs (default: on the "
                                            "outputs of the blocks before it as quantized)");
  app.add_option("--calib-activations", o.calib_activations,
                 "activations of the sequential stream into stored block tensors: int8 (lowbit's integer "
                 "kernels, as the engine runs the file) or float32 (the decoded weights)")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "threads (0: all cores; 1 for models under 10M weights)")->capture_default_str();
  app.add_option("--report", o.report, "write the report as JSON");
  app.add_option("--ctx", o.context, "positions per calibration chunk")->capture_default_str();
  app.add_option("--calib-tokens", o.calib_tokens,
                 "calibration tokens (0: max(20000, 4 x the largest in_features))")->capture_default_str();
  app.add_flag("--rotate", o.rotate, "also try the model with its norms folded and its residual stream "
                                     "rotated (a plain llama file); keep what the held-out tail of the "
                                     "calibration half prefers");
  app.add_option("--rotate-seeds", o.rotate_seeds, "rotation seeds tried with --rotate")->capture_default_str();
  app.add_option("--rotate-seed", o.rotate_seed, "first rotation seed")->capture_default_str();
  app.add_flag("--rotate-heads", o.rotate_heads, "also rotate each head's value/output pair");
  app.add_option("--val-predictions", o.val_predictions,
                 "predictions in the held-out tail that chooses (--rotate)")->capture_default_str();
  app.add_option("--measure-rows", o.measure_rows, "rows per tensor --bpw measures")->capture_default_str();
  app.add_option("--fisher-tokens", o.fisher_tokens,
                 "tokens of the backward pass weighting --bpw's errors by loss (0: relative errors)")
      ->capture_default_str();
  bool quiet = false;
  app.add_flag("-q,--quiet", quiet, "no progress bar");
  CLI11_PARSE(app, argc, argv);

  const std::string load0 = load_average();
  RssSampler rss;
  const bool bar = !quiet && isatty(fileno(stderr)) != 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::mutex m;
  const auto on_progress = [&](const lbq::Progress& p) {
    if (!bar) return;
    std::lock_guard<std::mutex> lock(m);
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int width = 24, fill = int(p.done * width + 0.5);
    const std::string blocks = p.block >= 0 ? fmt::format("block {}/{}", p.block + 1, p.blocks) : "";
    fmt::print(stderr, "\r\033[K[{}{}] {:3.0f}% {} {} {} ETA {}", std::string(size_t(fill), '#'),
               std::string(size_t(width - fill), '.'), 100 * p.done, p.phase, blocks, p.tensor,
               p.done > 0.01 ? duration(el * (1 - p.done) / p.done) : std::string("?"));
  };
  try {
    lbq::Quantizer q(o, on_progress);
    const lbq::RunReport r = q.run();
    if (bar) fmt::print(stderr, "\r\033[K");
    const long peak = rss.stop();
    const std::string load1 = load_average();
    const int threads = q.threads();
    fmt::print("lowbit-quantize: {} -> {}\n", r.model, r.out);
    fmt::print("method {}, target {}, allocator {}, calibration {} on {} tokens ({} chunks of the "
               "first half; {} available, {} needed)\n",
               r.method, r.target, r.allocator, r.calibration, r.calib_tokens, r.calib_sequences,
               r.tokens_available, r.tokens_needed);
    if (!r.candidates.empty() && r.candidates.size() > 1) {
      fmt::print("rotation: chosen on the held-out tail of the calibration half ({} predictions):\n",
                 r.candidates.front().val_predictions);
      for (const auto& c : r.candidates)
        fmt::print("  {:<40} validation PPL {:.4f}{}\n", c.transform, c.val_ppl, c.chosen ? "  <- chosen" : "");
    }
    fmt::print("\n{:<28} {:>14} {:>7} {:>8} {:>12} {:>11}  {}\n", "tensor", "shape", "type", "bits/w",
               "bytes", "rel. error", "how");
    for (const auto& t : r.tensors)
      fmt::print("{:<28} {:>14} {:>7} {:>8.3f} {:>12} {:>11}  {}{}\n", t.name, shape(t.ne), t.type,
                 t.bits_per_weight(), t.bytes,
                 std::isnan(t.rel_error) ? std::string("-") : fmt::format("{:.3e}", t.rel_error),
                 t.method, t.type != t.wanted ? " (fallback from " + t.wanted + ")" : "");
    for (const auto& fb : r.fallbacks) fmt::print("fallback: {}\n", fb);
    fmt::print("\nquantized tensors: {} weights in {} bytes, {:.4f} bits/weight", r.quantized_weights,
               r.quantized_bytes, r.quantized_bits_per_weight());
    if (r.budget_bytes)
      fmt::print(" (budget {} bytes = {:.4f} bits/weight; {} distortion; {})", r.budget_bytes,
                 8.0 * double(r.budget_bytes) / double(r.quantized_weights), r.distortion,
                 r.allocator == "measured" ? (r.allocation_exact ? "exact optimum" : "Lagrangian + greedy")
                                           : "closed form");
    fmt::print("\nfile {} bytes (input {} bytes, {:.2f}x smaller)\n", r.file_bytes, r.input_bytes,
               double(r.input_bytes) / double(std::max<uint64_t>(r.file_bytes, 1)));
    fmt::print("time {:.1f} s with {} threads, peak anonymous memory {:.1f} MB (RssAnon), load "
               "average {} -> {}\n", r.seconds, threads, double(peak) / 1024.0, load0, load1);
    if (!o.report.empty()) {
      std::ofstream f(o.report);
      if (!f) throw lowbit::Error("--report: cannot write '" + o.report + "'");
      f << to_json(r, peak, load0, load1, threads).dump(2) << "\n";
      fmt::print("wrote {}\n", o.report);
    }
  } catch (const std::exception& e) {
    if (bar) fmt::print(stderr, "\r\033[K");
    fmt::print(stderr, "lowbit-quantize: {}\n", e.what());
    return 1;
  }
  return 0;
}
