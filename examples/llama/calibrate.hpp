// calibrate.hpp: collects per-Linear input statistics (lowbit::ptq::Calibration) on calibration text.
#pragma once

#include "engine.hpp"
#include "perplexity.hpp"

#include <lowbit/ptq/calibration.hpp>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace llama {

/// The captured input a Linear reads: q/k/v share "attn_q", gate/up share "ffn_gate".
inline const std::string& input_name(int k) {
  static const std::string names[] = {"attn_q", "attn_q", "attn_q", "attn_output",
                                      "ffn_gate", "ffn_down", "ffn_gate"};
  lowbit::detail::require(k >= 0 && k < 7, "k: expected 0..6, got {}", k);
  return names[k];
}

/// Statistics of every distinct Linear input, keyed {layer, input_name(k)}; the head is {-1, "output"}.
using CalibrationSet = std::map<std::pair<int, std::string>, lowbit::ptq::Calibration>;

/// Runs `model` over the chunks ([BOS] + tokens, truncated to `context`, each from a fresh
/// context) until at least `max_tokens` tokens were seen, accumulating each Linear's inputs.
/// `on_chunk(tokens_so_far, max_tokens)` may report progress.
inline CalibrationSet collect_calibration(Model& model, const Tokenizer& tok,
                                          const std::vector<std::string>& chunks, int context,
                                          long max_tokens,
                                          const std::function<void(long, long)>& on_chunk = {}) {
  lowbit::detail::require(!chunks.empty(), "chunks: expected calibration text");
  lowbit::detail::require(max_tokens > 0, "max_tokens: expected > 0, got {}", max_tokens);
  CalibrationSet set;
  model.set_capture([&](int layer, const std::string& name, const MatrixXfR& x) {
    auto it = set.find({layer, name});
    if (it == set.end()) it = set.emplace(std::make_pair(layer, name), lowbit::ptq::Calibration(x.cols())).first;
    it->second.add(x);
  });
  long seen = 0;
  try {
    for (const auto& chunk : chunks) {
      if (seen >= max_tokens) break;
      const auto ids = chunk_tokens(tok, chunk, context);
      model.reset();
      model.forward(ids);
      seen += long(ids.size());
      if (on_chunk) on_chunk(seen, max_tokens);
    }
  } catch (...) {
    model.set_capture({});
    throw;
  }
  model.set_capture({});
  model.reset();
  return set;
}

}  // namespace llama
