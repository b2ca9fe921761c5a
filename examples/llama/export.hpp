// export.hpp: writing a llama model as a GGUF file llama.cpp loads as it is: the tensor type of
// every tensor for a target (llama.cpp's rules for the embedding and the head, the fallbacks for
// rows no block fits, --keep overrides), the output order, the metadata and a streaming writer.
// Shared by lowbit-quantize and by every tool that writes quantized llama files; the per-tensor
// type rules themselves are gguf_export.hpp's (export_wanted_type, fitting_type), the one copy.
#pragma once

#include "gguf_export.hpp"
#include "model.hpp"

#include <lowbit/core/error.hpp>
#include <lowbit/formats/format.hpp>
#include <lowbit/formats/type.hpp>
#include <lowbit/io/gguf.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <utility>
#include <vector>

namespace llama {

/// What a tensor of a llama GGUF is, from its name (as llama.cpp's quantizer classifies them).
enum class TensorRole {
  token_embd, output, attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down, norm, other
};

inline TensorRole role_of(const std::string& name) {
  const auto ends = [&](const char* s) {
    const std::string t(s);
    return name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0;
  };
  if (name == "token_embd.weight") return TensorRole::token_embd;
  if (name == "output.weight") return TensorRole::output;
  if (ends("_norm.weight")) return TensorRole::norm;
  if (ends(".attn_q.weight")) return TensorRole::attn_q;
  if (ends(".attn_k.weight")) return TensorRole::attn_k;
  if (ends(".attn_v.weight")) return TensorRole::attn_v;
  if (ends(".attn_output.weight")) return TensorRole::attn_output;
  if (ends(".ffn_gate.weight")) return TensorRole::ffn_gate;
  if (ends(".ffn_up.weight")) return TensorRole::ffn_up;
  if (ends(".ffn_down.weight")) return TensorRole::ffn_down;
  return TensorRole::other;
}

/// Whether a tensor of this role is a weight matrix a quantizer may store in a block format (the
/// block Linears, the embedding and the head; not the norms or other tensors).
inline bool is_quantizable(TensorRole r) { return r != TensorRole::norm && r != TensorRole::other; }

/// A --keep rule: tensors whose name matches `pattern` (std::regex_search) get `type`.
struct KeepRule {
  std::string text;  ///< "REGEX=TYPE" as given
  std::regex pattern;
  lowbit::formats::Type type = lowbit::formats::Type::F32;
};

/// Parses "REGEX=TYPE" (the last '=' splits; TYPE a ggml type name such as Q8_0, F16); throws
/// lowbit::Error naming the rule for a missing '=', a bad regex or an unknown type.
inline KeepRule parse_keep(const std::string& text) {
  const auto eq = text.rfind('=');
  lowbit::detail::require(eq != std::string::npos && eq > 0 && eq + 1 < text.size(),
                          "--keep '{}': expected REGEX=TYPE", text);
  KeepRule r;
  r.text = text;
  try {
    r.pattern = std::regex(text.substr(0, eq));
  } catch (const std::regex_error& e) {
    lowbit::detail::fail("--keep '{}': bad regular expression: {}", text, e.what());
  }
  const auto t = lowbit::formats::parse_type(text.substr(eq + 1));
  lowbit::detail::require(t.has_value() && (lowbit::formats::find_format(*t) != nullptr ||
                                            lowbit::formats::detail::is_plain(*t)),
                          "--keep '{}': '{}' is not a type lowbit writes ({})", text,
                          text.substr(eq + 1), lowbit::formats::detail::supported_list(true));
  r.type = *t;
  return r;
}

/// The first rule matching `name`, or nullptr.
inline const KeepRule* find_keep(const std::vector<KeepRule>& rules, const std::string& name) {
  for (const auto& r : rules)
    if (std::regex_search(name, r.pattern)) return &r;
  return nullptr;
}

/// One tensor of the output file and why it has its type.
struct TensorChoice {
  std::string name;
  std::vector<uint64_t> ne;
  TensorRole role = TensorRole::other;
  lowbit::formats::Type type = lowbit::formats::Type::F32;
  lowbit::formats::Type wanted = lowbit::formats::Type::F32;  ///< before a fallback
  std::string rule;  ///< "target", "llama.cpp head rule", "--keep REGEX=TYPE", "norm (F32)", ...

  bool fell_back() const { return type != wanted; }
  uint64_t cols() const { return ne.empty() ? 0 : ne[0]; }
  uint64_t rows() const {
    uint64_t r = 1;
    for (size_t i = 1; i < ne.size(); ++i) r *= ne[i];
    return r;
  }
  uint64_t weights() const { return rows() * cols(); }
  uint64_t bytes() const { return rows() * lowbit::formats::row_bytes(type, cols()); }
};

/// The tensors of the output file in the order it stores them: tensors of other roles first (as
/// in the input), token_embd, then per block attn_norm, attn_q, attn_k, attn_v, attn_output,
/// ffn_norm, ffn_gate, ffn_up, ffn_down, then output_norm and output (the order a streaming
/// quantizer finishes them in). `untie_head` adds output.weight for a file that ties it.
inline std::vector<TensorChoice> export_tensors(const lowbit::io::GgufFile& f, const Config& c,
                                                bool untie_head = false) {
  std::vector<TensorChoice> out;
  const auto add = [&](const std::string& name) {
    const lowbit::io::TensorInfo& t = f.tensor(name);
    TensorChoice ch;
    ch.name = name;
    ch.ne = t.ne;
    ch.role = role_of(name);
    ch.type = ch.wanted = t.type;
    out.push_back(std::move(ch));
  };
  std::vector<std::string> known = {"token_embd.weight", "output_norm.weight", "output.weight"};
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    for (const char* n : {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                          "ffn_gate", "ffn_up", "ffn_down"})
      known.push_back(p + n + ".weight");
  }
  for (const auto& t : f.tensors())
    if (std::find(known.begin(), known.end(), t.name) == known.end()) add(t.name);
  add("token_embd.weight");
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    for (const char* n : {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                          "ffn_gate", "ffn_up", "ffn_down"})
      add(p + n + ".weight");
  }
  add("output_norm.weight");
  if (f.find_tensor("output.weight")) {
    add("output.weight");
  } else if (untie_head) {
    TensorChoice ch = out[out.size() - 1];  // shaped as the embedding
    for (const auto& e : out)
      if (e.name == "token_embd.weight") ch = e;
    ch.name = "output.weight";
    ch.role = TensorRole::output;
    out.push_back(std::move(ch));
  }
  return out;
}

/// Sets every tensor's type for a uniform target `t`, as lowbit-quantize --type does: the block
/// Linears in `t`; the head and a tied embedding llama.cpp's head rule, an untied embedding the
/// target; norms and other tensors F32 (other quantized input tensors keep their type); then
/// --keep rules (first match wins) and, for rows a type does not fit, the fallback.
/// `tied`: the file has no output.weight (the embedding doubles as the head).
inline void choose_types(std::vector<TensorChoice>& tensors, lowbit::formats::Type t,
                         const std::vector<KeepRule>& keep, bool tied) {
  for (auto& ch : tensors) {
    const uint64_t cols = ch.cols();
    if (ch.role == TensorRole::norm) {
      ch.type = ch.wanted = lowbit::formats::Type::F32;
      ch.rule = "norm (F32)";
      continue;
    }
    if (ch.role == TensorRole::other) {
      if (!lowbit::formats::info(ch.type).quantized) ch.type = ch.wanted = lowbit::formats::Type::F32;
      ch.rule = "copied";
      continue;
    }
    if (const KeepRule* k = find_keep(keep, ch.name)) {
      ch.wanted = k->type;
      ch.rule = "--keep " + k->text;
    } else {
      ch.wanted = export_wanted_type(ch.name, int(ch.ne.size()), cols, t, !tied);
      ch.rule = ch.role == TensorRole::output || (tied && ch.role == TensorRole::token_embd)
                    ? "llama.cpp head rule"
                    : ch.role == TensorRole::token_embd ? "llama.cpp embedding rule" : "target";
    }
    ch.type = fitting_type(ch.wanted, cols);
  }
}

/// The metadata of the output file: the source's (every key, tokenizer included, order kept,
/// split keys dropped) with `extra` keys set (replaced in place or appended).
inline lowbit::io::Metadata export_metadata(const lowbit::io::GgufFile& src,
                                            const lowbit::io::Metadata& extra) {
  lowbit::io::Metadata m = lowbit::io::output_metadata(src);
  for (const auto& [key, value] : extra) lowbit::io::set_value(m, key, value);
  return m;
}

/// The tensor specs of `tensors` for GgufWriter.
inline std::vector<lowbit::io::TensorSpec> export_specs(const std::vector<TensorChoice>& tensors) {
  std::vector<lowbit::io::TensorSpec> specs;
  for (const auto& ch : tensors) specs.push_back({ch.name, ch.ne, ch.type});
  return specs;
}

/// Encodes a float matrix as `type` with formats' rounding (F32/F16/BF16 conversion, or a block
/// format's plain rounding): the bytes a GGUF tensor of that type holds.
inline std::vector<uint8_t> encode_matrix(lowbit::formats::Type type, const lowbit::MatrixXfR& m) {
  return lowbit::formats::quantize_matrix(type, m);
}

/// Encodes a vector (a norm's gain) as `type` (F32 for norms).
inline std::vector<uint8_t> encode_vector(lowbit::formats::Type type, const Eigen::VectorXf& v) {
  const lowbit::MatrixXfR m = Eigen::Map<const lowbit::MatrixXfR>(v.data(), 1, v.size());
  return lowbit::formats::quantize_matrix(type, m);
}

}  // namespace llama
