// llama_qat.cpp: quantization-aware training of a llama GGUF on the exact grid of a GGUF block
// format, written as the GGUF file llama.cpp runs (bit for bit the trained model).
#include "../llama/engine.hpp"
#include "../llama/gguf_export.hpp"
#include "../llama/model.hpp"
#include "../llama/perplexity.hpp"
#include "../llama/tokenizer.hpp"
#include "../llama_train/format_qat.hpp"

#include <lowbit/formats/type.hpp>
#include <lowbit/io/gguf.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

using lowbit::formats::Type;

struct Options {
  std::string model = "../shared/models/stories260K.gguf";
  std::string text = "../shared/data/tinystories_val.txt";
  std::string out, init, start_out, json;
  std::string type = "Q4_0";
  int steps = 100;
  long batch = 2048;
  float lr = 5e-4f;
  float scale_lr_ratio = 0.1f;
  double kd = 1.0, ce = 0.0;
  uint32_t seed = 1234;
  int context = 512;
  bool eval = false;
  long min_predictions = 20000;
};

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return f ? a + " " + b + " " + c : std::string("unknown");
}

bool tty() { return isatty(fileno(stderr)) != 0; }

double file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  return double(f.tellg());
}

int run(const Options& o) {
  using Clock = std::chrono::steady_clock;
  const auto parsed = lowbit::formats::parse_type(o.type);
  lowbit::detail::require(parsed.has_value(), "--type: unknown type '{}'", o.type);
  const Type target = *parsed;
  lowbit::detail::require(lowbit::formats::find_format(target) != nullptr,
                          "--type: {} is not a block format", o.type);
  const auto source = lowbit::io::GgufFile::open(o.model);
  const llama::Weights w = llama::load_weights(source, o.context);
  const llama::Tokenizer tok = llama::Tokenizer::from_gguf(source);
  std::ifstream tf(o.text);
  lowbit::detail::require(bool(tf), "--text: cannot read '{}'", o.text);
  std::stringstream ss;
  ss << tf.rdbuf();
  const auto halves = llama::split_halves(llama::split_chunks(ss.str()));
  std::vector<std::vector<int>> train;
  long train_tokens = 0;
  for (const auto& c : halves.calibration) {
    train.push_back(llama::chunk_tokens(tok, c, o.context));
    train_tokens += long(train.back().size());
  }

  using namespace llama::train;
  const Params<float> teacher = from_weights<float>(w);
  const bool has_output = source.find_tensor("output.weight") != nullptr;
  FormatStart start;
  if (o.init.empty()) {
    Params<float> layout = teacher;
    if (has_output && layout.tied) {
      layout.tied = false;
      layout.output = layout.token_embd;
    }
    start = start_from_rounding(teacher, export_types(layout, target, has_output), has_output);
  } else {
    start = start_from_file(lowbit::io::GgufFile::open(o.init), o.context);
  }
  std::map<std::string, int> type_counts;
  for (const auto& [name, fp] : start.formats) ++type_counts[lowbit::formats::to_string(fp.type)];
  std::string types;
  for (const auto& [t, n] : type_counts) types += fmt::format("{}{} x {}", types.empty() ? "" : ", ", n, t);
  fmt::print("start: {} ({} tensors on a grid: {}); norms F32\n", start.description,
             start.formats.size(), types);

  QatModel model(start.latent, start.formats);
  if (!o.start_out.empty()) {
    llama::write_model_gguf(o.start_out, source, export_tensors(model), target);
    fmt::print("wrote the start point: {} ({:.0f} bytes)\n", o.start_out, file_bytes(o.start_out));
  }
  QatOptions opt;
  opt.steps = o.steps;
  opt.batch_tokens = o.batch;
  opt.lr = o.lr;
  opt.scale_lr_ratio = o.scale_lr_ratio;
  opt.loss = {o.ce, o.kd};
  opt.seed = o.seed;
  const std::string load_before = load_average();
  const auto t0 = Clock::now();
  double first_kl = 0, last_kl = 0, last_ce = 0;
  const auto log = model.train(train, &teacher, opt, [&](const QatStep& s) {
    if (s.step == 0) first_kl = s.kl;
    last_kl = s.kl;
    last_ce = s.ce;
    if (tty())
      fmt::print(stderr, "\r\033[Kstep {}/{}: KL {:.5f} CE {:.4f}", s.step + 1, o.steps, s.kl, s.ce);
    else if ((s.step + 1) % 10 == 0 || s.step + 1 == o.steps)
      fmt::print(stderr, "step {}/{}: KL {:.5f} CE {:.4f}\n", s.step + 1, o.steps, s.kl, s.ce);
  });
  if (tty()) fmt::print(stderr, "\r\033[K");
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const std::string load_after = load_average();
  fmt::print("QAT: {} steps x {} predictions, Adam lr {} (grids at {}x), loss {}*CE + {}*KL(FP32 "
             "|| model) on the calibration half ({} chunks, {} tokens); KL {:.5f} -> {:.5f}; "
             "{:.1f} s (load average {} before, {} after)\n",
             o.steps, o.batch, o.lr, o.scale_lr_ratio, o.ce, o.kd, train.size(), train_tokens,
             first_kl, last_kl, seconds, load_before, load_after);

  lowbit::io::Metadata extra;
  using lowbit::io::Value;
  extra.emplace_back("lowbit.qat.type", Value::of_string(lowbit::formats::to_string(target)));
  extra.emplace_back("lowbit.qat.start", Value::of_string(start.description));
  extra.emplace_back("lowbit.qat.steps", Value::of_uint32(uint32_t(o.steps)));
  extra.emplace_back("lowbit.qat.batch_tokens", Value::of_uint32(uint32_t(o.batch)));
  extra.emplace_back("lowbit.qat.lr", Value::of_float32(o.lr));
  extra.emplace_back("lowbit.qat.scale_lr_ratio", Value::of_float32(o.scale_lr_ratio));
  extra.emplace_back("lowbit.qat.loss",
                     Value::of_string(fmt::format("{}*CE + {}*KL(FP32 || model)", o.ce, o.kd)));
  extra.emplace_back("lowbit.qat.final_kl", Value::of_float32(float(last_kl)));
  extra.emplace_back("lowbit.qat.final_ce", Value::of_float32(float(last_ce)));
  extra.emplace_back("lowbit.qat.seed", Value::of_uint32(o.seed));
  llama::write_model_gguf(o.out, source, export_tensors(model), target, extra);
  const double bytes = file_bytes(o.out);
  fmt::print("wrote {} ({:.0f} bytes)\n", o.out, bytes);

  nlohmann::json report = {{"model", o.model},      {"type", o.type},
                           {"start", start.description}, {"steps", o.steps},
                           {"batch_tokens", o.batch}, {"lr", o.lr},
                           {"scale_lr_ratio", o.scale_lr_ratio}, {"kd", o.kd}, {"ce", o.ce},
                           {"seconds", seconds},    {"load_before", load_before},
                           {"load_after", load_after}, {"first_kl", first_kl},
                           {"final_kl", last_kl},   {"out", o.out}, {"bytes", bytes}};
  if (o.eval) {
    llama::PerplexityOptions popt;
    popt.context = o.context;
    popt.min_predictions = o.min_predictions;
    auto ppl = [&](const llama::Weights& weights) {
      llama::Model m(weights);
      return llama::evaluate_perplexity(halves.evaluation, tok, [&](const std::vector<int>& ids) {
        m.reset();
        return m.forward(ids);
      }, popt);
    };
    const auto fp = ppl(w);
    const auto st = ppl(to_weights(QatModel(start.latent, start.formats).effective()));
    const auto tr = ppl(llama::load_weights(lowbit::io::GgufFile::open(o.out), o.context));
    fmt::print("perplexity on the evaluation half ({} predictions): FP32 {:.4f}, start {:.4f}, "
               "QAT {:.4f} ({:+.2f}% vs start)\n",
               tr.predictions, fp.ppl, st.ppl, tr.ppl, 100.0 * (tr.ppl / st.ppl - 1.0));
    report["eval"] = {{"predictions", tr.predictions}, {"fp32_ppl", fp.ppl},
                      {"start_ppl", st.ppl}, {"qat_ppl", tr.ppl}};
  }
  if (!o.json.empty()) {
    std::ofstream j(o.json);
    lowbit::detail::require(bool(j), "--json: cannot write '{}'", o.json);
    j << report.dump(2) << "\n";
  }
  (void)log;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"QAT of a llama GGUF on the exact grid of a GGUF block format; writes the GGUF "
               "file llama.cpp runs, bit for bit the trained model"};
  app.add_option("--model", o.model, "FP32/F16 llama GGUF (the teacher)")->capture_default_str();
  app.add_option("--text", o.text, "training text: its first half of blank-line chunks is used")
      ->capture_default_str();
  app.add_option("--type", o.type, "target block type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K)")
      ->capture_default_str();
  app.add_option("--out", o.out, "the trained GGUF to write")->required();
  app.add_option("--init", o.init,
                 "start from this quantized GGUF of the same model (e.g. lowbit-quantize's GPTQ "
                 "file); default: each format's plain rounding");
  app.add_option("--start-out", o.start_out, "also write the start point (step 0) as a GGUF");
  app.add_option("--qat-steps", o.steps, "Adam steps")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--batch", o.batch, "predictions per step")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--lr", o.lr, "weight learning rate (cosine to 0.1x)")->capture_default_str();
  app.add_option("--scale-lr-ratio", o.scale_lr_ratio, "learning rate of scales/offsets relative to --lr")
      ->capture_default_str();
  app.add_option("--kd", o.kd, "weight of KL(FP32 || model)")->capture_default_str();
  app.add_option("--ce", o.ce, "weight of the next-token cross-entropy")->capture_default_str();
  app.add_option("--seed", o.seed, "batch order seed")->capture_default_str();
  app.add_option("--ctx", o.context, "context (positions per chunk)")->capture_default_str();
  app.add_flag("--eval", o.eval, "perplexity of FP32, the start and the trained file on the evaluation half");
  app.add_option("--predictions", o.min_predictions, "evaluation predictions (--eval)")->capture_default_str();
  app.add_option("--json", o.json, "write a JSON report");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    fmt::print(stderr, "llama_qat: {}\n", e.what());
    return 1;
  }
}
