// gguf_export.hpp: a llama model's tensors written as the GGUF file llama.cpp runs: the type
// llama.cpp's quantizer gives each tensor for a target type, and a writer that keeps the source
// file's metadata (tokenizer included) and tensor order.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/formats/type.hpp>
#include <lowbit/io/gguf.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace llama {

using lowbit::formats::Type;

/// The type llama.cpp's quantizer stores a tensor in when its rows (`row_length` values) do not
/// fit `type`'s block (llama-quant.cpp's fallback): Q2_K, Q3_K -> Q4_0; Q4_K -> Q5_0;
/// Q5_K -> Q5_1; Q6_K -> Q8_0; IQ4_XS -> IQ4_NL; and F16 when that does not fit either. For the
/// legacy targets (Q4_0, Q8_0, ...) llama.cpp has no fallback and refuses the model; lowbit stores
/// such a tensor in F16, as llama.cpp's own files of stories260K keep its 172-wide FFN-down rows.
/// A type that fits is returned as it is.
inline Type fitting_type(Type type, uint64_t row_length) {
  const auto fits = [&](Type t) { return row_length % lowbit::formats::info(t).block_size == 0; };
  if (fits(type)) return type;
  Type fallback = Type::F16;
  switch (type) {
    case Type::Q2_K: case Type::Q3_K: fallback = Type::Q4_0; break;
    case Type::Q4_K: fallback = Type::Q5_0; break;
    case Type::Q5_K: fallback = Type::Q5_1; break;
    case Type::Q6_K: fallback = Type::Q8_0; break;
    case Type::IQ4_XS: fallback = Type::IQ4_NL; break;
    default: break;
  }
  return fits(fallback) ? fallback : Type::F16;
}

/// The type llama.cpp's quantizer wants for the output head (and the one table of a model
/// without output.weight) at the target `target` (default options, no --output-tensor-type),
/// before any fallback: Q8_0 when its rows do not fit the target's block or the target is Q8_0,
/// else Q6_K. Non-block targets (F32/F16/BF16) keep their type.
inline Type head_wanted_type(Type target, uint64_t row_length) {
  if (!lowbit::formats::info(target).quantized) return target;
  if (row_length % lowbit::formats::info(target).block_size != 0 || target == Type::Q8_0)
    return Type::Q8_0;
  return Type::Q6_K;
}

/// The type llama.cpp's quantizer gives the output head: head_wanted_type, then fitting_type
/// (Q6_K on 64-wide rows becomes Q8_0).
inline Type head_type(Type target, uint64_t row_length) {
  return fitting_type(head_wanted_type(target, row_length), row_length);
}

/// The type tensor `name` (a GGUF tensor name, e.g. "blk.0.attn_q.weight") with `n_dims`
/// dimensions and rows of `row_length` is wanted in for an export to `target`, before the
/// fallback for rows its block does not fit, as llama.cpp's quantizer chooses it for
/// `--type target` with every block Linear in the target (no K-quant mix rules): 1-D tensors
/// and norms F32; output.weight, and token_embd.weight when the model has no output.weight
/// (`has_output` false: one table for lookup and head), head_wanted_type(); every other 2-D
/// weight (block Linears, an untied token_embd) the target.
inline Type export_wanted_type(const std::string& name, int n_dims, uint64_t row_length,
                               Type target, bool has_output) {
  if (n_dims < 2 || name.find("_norm.weight") != std::string::npos) return Type::F32;
  if (name == "output.weight" || (!has_output && name == "token_embd.weight"))
    return head_wanted_type(target, row_length);
  return target;
}

/// The type of tensor `name` in an export to `target`: export_wanted_type, then fitting_type.
/// The one place lowbit's exporters (llama_requant, llama_qat, lowbit-quantize) take llama.cpp's
/// per-tensor choice from.
inline Type export_type(const std::string& name, int n_dims, uint64_t row_length, Type target,
                        bool has_output) {
  const Type t = export_wanted_type(name, n_dims, row_length, target, has_output);
  return lowbit::formats::info(t).quantized ? fitting_type(t, row_length) : t;
}

/// One tensor of an export: its GGUF name, dims (ne[0] the row length), type and stored bytes
/// (rows of formats::row_bytes(type, ne[0]) bytes each).
struct ExportTensor {
  std::string name;
  std::vector<uint64_t> ne;
  Type type = Type::F32;
  std::vector<uint8_t> bytes;
};

/// Writes a llama GGUF to `path`: the metadata of `source` (every key in order, the tokenizer
/// included, less split.* keys), then each key of `extra` set (replaced in place or appended),
/// general.file_type for `target` (io::file_type_for) and general.quantization_version 2; the
/// tensors in the order `source` lists them, each taken from `tensors` by name or, when absent
/// there, copied from `source` as it is. Streams tensor by tensor into a temporary file renamed
/// onto `path` only when complete; refuses `path` equal to the source file. Throws
/// lowbit::Error naming the tensor for a byte count or shape that does not match, or a tensor
/// of `tensors` the source does not have.
inline void write_model_gguf(const std::string& path, const lowbit::io::GgufFile& source,
                             const std::vector<ExportTensor>& tensors, Type target,
                             const lowbit::io::Metadata& extra = {}) {
  std::map<std::string, const ExportTensor*> by_name;
  for (const auto& t : tensors) {
    lowbit::detail::require(by_name.emplace(t.name, &t).second,
                            "tensors: '{}' is given twice", t.name);
    lowbit::detail::require(source.find_tensor(t.name) != nullptr,
                            "tensors: '{}' is not a tensor of the source file", t.name);
  }
  std::vector<lowbit::io::TensorSpec> specs;
  for (const auto& info : source.tensors()) {
    auto it = by_name.find(info.name);
    if (it == by_name.end()) {
      specs.push_back({info.name, info.ne, info.type});
      continue;
    }
    const ExportTensor& t = *it->second;
    lowbit::detail::require(t.ne == info.ne, "tensors['{}']: its dims differ from the source's",
                            t.name);
    specs.push_back({t.name, t.ne, t.type});
  }
  lowbit::io::Metadata meta = lowbit::io::output_metadata(source);
  for (const auto& [key, value] : extra) lowbit::io::set_value(meta, key, value);
  lowbit::io::WriteOptions opt;
  opt.file_type = uint32_t(lowbit::io::file_type_for(target));
  if (!source.path().empty()) opt.inputs = {source.path()};
  lowbit::io::GgufWriter w(path, std::move(meta), specs, opt);
  for (const auto& info : w.tensors()) {
    auto it = by_name.find(info.name);
    if (it == by_name.end())
      w.write_tensor(info.name, source.raw(info.name));
    else
      w.write_tensor(info.name, it->second->bytes);
  }
  w.finish();
}

}  // namespace llama
