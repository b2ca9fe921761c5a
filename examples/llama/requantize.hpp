// requantize.hpp: a llama GGUF rewritten in GGUF block formats (formats' plain rounding), typed as llama.cpp would.
#pragma once

#include "gguf_export.hpp"

#include <lowbit/core/error.hpp>
#include <lowbit/formats/format.hpp>
#include <lowbit/formats/type.hpp>
#include <lowbit/io/gguf.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace llama {

/// What requantize_model writes.
struct RequantOptions {
  /// The type of the weights (llama.cpp's ftype: its default tensor type).
  lowbit::formats::Type type = lowbit::formats::Type::Q8_0;
  /// Types by tensor class ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
  /// "ffn_down", "output", "token_embd") or by full tensor name (which wins), used exactly as
  /// given: a row length the type's block does not fit is refused by the writer.
  std::map<std::string, lowbit::formats::Type> overrides;
};

/// The class of a tensor name: "attn_q" for "blk.3.attn_q.weight", "output" for "output.weight",
/// "token_embd" for "token_embd.weight"; else the name itself.
inline std::string tensor_class(const std::string& name) {
  std::string s = name;
  if (s.rfind("blk.", 0) == 0) {
    const size_t dot = s.find('.', 4);
    if (dot != std::string::npos) s = s.substr(dot + 1);
  }
  const std::string suffix = ".weight";
  if (s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0)
    s.resize(s.size() - suffix.size());
  return s;
}

/// Whether llama.cpp's quantizer quantizes the tensor: at least 2 dimensions, a name ending in
/// "weight" that is not a norm ("_norm.weight").
inline bool quantizable(const lowbit::io::TensorInfo& t) {
  const std::string& n = t.name;
  const auto ends = [&](const std::string& s) {
    return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0;
  };
  return t.ne.size() >= 2 && ends("weight") && !ends("_norm.weight");
}

/// The type tensor `t` gets: unchanged when not quantizable; an override (full name, then class)
/// as given; else export_type() for the target `o.type` (llama.cpp's choice for the head, the
/// fallback of rows the target's block does not fit).
inline lowbit::formats::Type requant_type(const lowbit::io::TensorInfo& t, const RequantOptions& o,
                                          bool has_output) {
  if (!quantizable(t)) return t.type;
  if (const auto it = o.overrides.find(t.name); it != o.overrides.end()) return it->second;
  const std::string cls = tensor_class(t.name);
  if (const auto it = o.overrides.find(cls); it != o.overrides.end()) return it->second;
  return export_type(t.name, int(t.ne.size()), t.ne[0], o.type, has_output);
}

/// What requantize_model wrote.
struct RequantResult {
  std::vector<std::pair<std::string, lowbit::formats::Type>> types;  ///< every tensor, file order
  uint64_t file_bytes = 0;    ///< the whole file
  uint64_t tensor_bytes = 0;  ///< the tensors' stored bytes (no padding)
};

/// Writes `src` (any llama GGUF whose tensors formats decodes) to `path` with each tensor in its
/// requant_type: rows decoded (formats::decode_row) and re-encoded by formats::quantize_row (the
/// plain reference rounding), one row in memory at a time, through io::GgufWriter (metadata kept,
/// general.file_type set, a temporary renamed into place when complete). Tensors whose type does
/// not change are copied byte for byte. Throws lowbit::Error naming the tensor on failure; no
/// partial file is left.
inline RequantResult requantize_model(const lowbit::io::GgufFile& src, const std::string& path,
                                      const RequantOptions& o) {
  using lowbit::formats::Type;
  const bool has_output = src.find_tensor("output.weight") != nullptr;
  std::vector<lowbit::io::TensorSpec> specs;
  RequantResult r;
  for (const auto& t : src.tensors()) {
    const Type to = requant_type(t, o, has_output);
    specs.push_back({t.name, t.ne, to});
    r.types.emplace_back(t.name, to);
  }
  lowbit::io::WriteOptions wo;
  if (o.overrides.empty()) wo.file_type = uint32_t(lowbit::io::file_type_for(o.type));
  if (!src.path().empty()) wo.inputs = {src.path()};
  lowbit::io::GgufWriter w(path, lowbit::io::output_metadata(src), specs, wo);
  std::vector<float> row;
  std::vector<uint8_t> out;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& t = src.tensors()[i];
    const Type to = specs[i].type;
    if (to == t.type) {
      w.write_tensor(t.name, src.raw(t));
      continue;
    }
    const lowbit::Index cols = t.cols();
    const size_t in_bytes = size_t(t.row_bytes()), out_bytes = size_t(lowbit::formats::row_bytes(to, uint64_t(cols)));
    row.resize(size_t(cols));
    out.resize(out_bytes);
    const uint8_t* p = src.tensor_data(t);
    try {
      for (lowbit::Index rr = 0; rr < t.rows(); ++rr) {
        lowbit::formats::decode_row(t.type, p + size_t(rr) * in_bytes, cols, row.data());
        lowbit::formats::quantize_row(to, row.data(), cols, out.data());
        w.append(out.data(), out.size());
      }
    } catch (const lowbit::Error& e) {
      lowbit::detail::fail("requantize: tensor '{}' ({} -> {}): {}", t.name, lowbit::formats::to_string(t.type),
                           lowbit::formats::to_string(to), e.what());
    }
  }
  w.finish();
  r.file_bytes = w.file_size();
  r.tensor_bytes = w.tensor_bytes();
  return r;
}

}  // namespace llama
