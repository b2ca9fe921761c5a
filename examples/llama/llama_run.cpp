// llama_run.cpp: runs a llama GGUF with lowbit: greedy generation and the perplexity protocol.
#include "engine.hpp"
#include "gguf_model.hpp"
#include "perplexity.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <fstream>
#include <sstream>

int main(int argc, char** argv) {
  CLI::App app{"Greedy generation and perplexity of a llama GGUF on lowbit"};
  std::string model_path, text_path, prompt;
  int n_generate = 32, context = 512;
  long min_predictions = 20000;
  bool all = false, from_start = false;
  std::string activations = "int8";
  app.add_option("--model", model_path, "llama GGUF file")->required();
  app.add_option("--prompt", prompt, "prompt to continue (BOS is prepended)");
  app.add_option("-n,--generate", n_generate, "tokens to generate greedily")->check(CLI::NonNegativeNumber);
  app.add_option("--text", text_path, "text to score with the perplexity protocol");
  app.add_option("--ctx", context, "training context: positions per chunk")->check(CLI::Range(2, 1 << 20));
  app.add_option("--min-predictions", min_predictions, "score chunks until this many predictions")
      ->check(CLI::PositiveNumber);
  app.add_flag("--all", all, "score every chunk of the evaluation half");
  app.add_flag("--from-start", from_start, "score from the first chunk of the text, not the evaluation half");
  app.add_option("--activations", activations,
                 "files with GGUF block tensors (Q8_0 ... Q6_K): int8 runs them W·A8 on lowbit's integer block "
                 "kernels, float32 weight-only")
      ->check(CLI::IsMember({"int8", "float32"}));
  CLI11_PARSE(app, argc, argv);
  try {
    const auto file = lowbit::io::GgufFile::open(model_path);
    const llama::Tokenizer tok = llama::Tokenizer::from_gguf(file);
    // Files with block tensors run them natively on lowbit's block kernels; F32/F16/BF16 files
    // load as float weights, as always.
    const bool blocks = llama::has_block_tensors(file);
    llama::GgufRunOptions run;
    run.context_length = context;
    run.activations = activations == "float32" ? lowbit::ActivationQuant::float32 : lowbit::ActivationQuant::int8;
    llama::Model model = blocks ? llama::load_model(file, run) : llama::Model(llama::load_weights(file, context));
    if (blocks) {
      std::string types;
      for (const auto& [type, n] : llama::tensor_types(file)) types += fmt::format(" {} x{}", type, n);
      fmt::print("file {} bytes; tensors{}; block tensors on lowbit's block kernels, {}\n", file.file_size(), types,
                 activations == "float32" ? "weight-only (float32 activations)" : "W·A8 (int8 activations)");
    }
    if (n_generate > 0) {
      std::vector<int> ids = tok.encode(prompt, true);
      std::vector<int> out = ids;
      model.reset();
      lowbit::MatrixXfR logits = model.forward(ids);
      for (int i = 0; i < n_generate && model.n_past() < context; ++i) {
        Eigen::Index next;
        logits.row(logits.rows() - 1).maxCoeff(&next);
        out.push_back(int(next));
        if (int(next) == tok.eos_id() || model.n_past() >= context) break;
        logits = model.forward({int(next)});
      }
      fmt::print("ids:");
      for (size_t i = ids.size(); i < out.size(); ++i) fmt::print(" {}", out[i]);
      fmt::print("\ntext: {}\n", tok.decode(out));
    }
    if (!text_path.empty()) {
      std::ifstream in(text_path, std::ios::binary);
      if (!in) throw lowbit::Error("--text: cannot read '" + text_path + "'");
      std::stringstream ss;
      ss << in.rdbuf();
      const auto chunks = llama::split_chunks(ss.str());
      const auto halves = llama::split_halves(chunks);
      llama::PerplexityOptions opt;
      opt.context = context;
      opt.min_predictions = min_predictions;
      opt.all = all;
      const auto r = llama::evaluate_perplexity(from_start ? chunks : halves.evaluation, tok,
                                                [&](const std::vector<int>& t) {
                                                  model.reset();
                                                  return model.forward(t);
                                                }, opt);
      fmt::print("chunks {} predictions {} mean NLL {:.4f} PPL {:.4f} tokens/s {:.0f}\n", r.chunks,
                 r.predictions, r.mean_nll, r.ppl, r.tokens_per_s);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "llama_run: {}\n", e.what());
    return 1;
  }
}
