// perplexity.hpp: the project's perplexity protocol (blank-line chunks, BOS, per-chunk scoring).
#pragma once

#include "tokenizer.hpp"

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>

#include <chrono>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

namespace llama {

/// The text's chunks: split on blank lines ("\n\n"), each stripped of surrounding whitespace,
/// empty ones dropped.
inline std::vector<std::string> split_chunks(const std::string& text) {
  std::vector<std::string> chunks;
  const auto strip_push = [&](size_t a, size_t b) {
    const char* ws = " \t\n\r\f\v";
    const std::string part = text.substr(a, b - a);
    const size_t s = part.find_first_not_of(ws);
    if (s == std::string::npos) return;
    chunks.push_back(part.substr(s, part.find_last_not_of(ws) - s + 1));
  };
  size_t start = 0;
  for (size_t p; (p = text.find("\n\n", start)) != std::string::npos; start = p + 2) strip_push(start, p);
  strip_push(start, text.size());
  return chunks;
}

/// Calibration (first half, floor(n/2) chunks) and evaluation (the rest) halves of the chunks.
struct ChunkSplit {
  std::vector<std::string> calibration, evaluation;
};
inline ChunkSplit split_halves(const std::vector<std::string>& chunks) {
  const size_t half = chunks.size() / 2;
  return {std::vector<std::string>(chunks.begin(), chunks.begin() + long(half)),
          std::vector<std::string>(chunks.begin() + long(half), chunks.end())};
}

/// Logits [tokens, vocab] for a token sequence starting at position 0 (an arbitrary model).
using ScoreFn = std::function<lowbit::MatrixXfR(const std::vector<int>& tokens)>;

struct PerplexityOptions {
  int context = 512;              ///< [BOS] + tokens truncated to this many positions
  long min_predictions = 20000;   ///< stop after the chunk that reaches this many predictions
  bool all = false;               ///< score every chunk instead
};

struct PerplexityResult {
  long predictions = 0;   ///< next-token predictions scored
  long tokens = 0;        ///< tokens run through the model (predictions + one BOS per chunk)
  size_t chunks = 0;
  double mean_nll = 0.0;  ///< nats per prediction
  double ppl = 0.0;       ///< exp(mean_nll)
  double seconds = 0.0;   ///< time in `score` calls
  double tokens_per_s = 0.0;
};

/// Token ids of a chunk as scored: [BOS] + encode(chunk), truncated to `context`.
inline std::vector<int> chunk_tokens(const Tokenizer& tok, const std::string& chunk, int context) {
  std::vector<int> ids = tok.encode(chunk, true);
  if (ids.size() > size_t(context)) ids.resize(size_t(context));
  return ids;
}

/// Scores `chunks` in order, each alone from a fresh context, every next-token prediction
/// counted; stops once min_predictions are reached (unless `all`). `on_chunk(done, total)` may
/// report progress.
inline PerplexityResult evaluate_perplexity(const std::vector<std::string>& chunks,
                                            const Tokenizer& tok, const ScoreFn& score,
                                            const PerplexityOptions& opt = {},
                                            const std::function<void(long, long)>& on_chunk = {}) {
  lowbit::detail::require(!chunks.empty(), "chunks: expected at least one chunk of text");
  lowbit::detail::require(opt.context >= 2, "context: expected >= 2, got {}", opt.context);
  lowbit::detail::require(opt.all || opt.min_predictions > 0, "min_predictions: expected > 0, got {}",
                          opt.min_predictions);
  lowbit::detail::require(bool(score), "score: expected a scoring function");
  PerplexityResult r;
  double nll = 0.0;
  for (const auto& chunk : chunks) {
    if (!opt.all && r.predictions >= opt.min_predictions) break;
    const std::vector<int> ids = chunk_tokens(tok, chunk, opt.context);
    if (ids.size() < 2) continue;
    const auto t0 = std::chrono::steady_clock::now();
    const lowbit::MatrixXfR logits = score(ids);
    r.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    lowbit::detail::require(logits.rows() == lowbit::Index(ids.size()) && logits.cols() > 0,
                            "score: expected logits of {} rows, got {}x{}", ids.size(),
                            logits.rows(), logits.cols());
    for (size_t i = 0; i + 1 < ids.size(); ++i) {  // log-softmax in double
      const auto row = logits.row(lowbit::Index(i));
      const double mx = row.maxCoeff();
      double sum = 0.0;
      for (lowbit::Index j = 0; j < row.size(); ++j) sum += std::exp(double(row(j)) - mx);
      lowbit::detail::require(ids[i + 1] < row.size(), "score: logits have {} columns, token {}",
                              row.size(), ids[i + 1]);
      nll += mx + std::log(sum) - double(row(ids[i + 1]));
    }
    lowbit::detail::require(std::isfinite(nll), "score: non-finite logits in chunk {}", r.chunks);
    r.predictions += long(ids.size()) - 1;
    r.tokens += long(ids.size());
    ++r.chunks;
    if (on_chunk) on_chunk(long(r.chunks), long(chunks.size()));
  }
  lowbit::detail::require(r.predictions > 0, "chunks: no chunk gave a prediction");
  r.mean_nll = nll / double(r.predictions);
  r.ppl = std::exp(r.mean_nll);
  r.tokens_per_s = r.seconds > 0 ? double(r.tokens) / r.seconds : 0.0;
  return r;
}

}  // namespace llama
