// format_qat.hpp: QAT of a llama on the exact grid of a GGUF block format: the per-tensor types
// of a llama.cpp export, the start from a format's rounding or from a PTQ file, and the export of
// the trained model as the GGUF file llama.cpp runs.
#pragma once

#include "../llama/gguf_export.hpp"
#include "../llama/model.hpp"
#include "qat.hpp"

#include <lowbit/core/error.hpp>
#include <lowbit/formats/format.hpp>
#include <lowbit/io/gguf.hpp>
#include <lowbit/qat/format_fake_quant.hpp>
#include <lowbit/qat/format_params.hpp>

#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace llama::train {

using lowbit::formats::Type;

/// A model set up for QAT on format grids: the latent weights and each quantized tensor's
/// parameters, by QatModel name ("blk.N.attn_q", ..., "output", and "token_embd" when the
/// latent model is untied), and how the start was made.
struct FormatStart {
  Params<float> latent;
  std::map<std::string, lowbit::qat::FormatParams> formats;
  std::string description;  ///< e.g. "Q4_0 plain rounding" or "file ptq.gguf"
};

/// The GGUF tensor name of a QatModel tensor name ("blk.0.attn_q" -> "blk.0.attn_q.weight").
inline std::string gguf_tensor_name(const std::string& name) { return name + ".weight"; }

/// The types a llama.cpp export of `p` to `target` gives its weights (llama::export_type), by
/// QatModel name. `has_output`: the file stores output.weight apart from token_embd.weight (then
/// `p` must be untied, and both tables get a type); otherwise the one table has the head's type
/// under "output".
inline std::map<std::string, Type> export_types(const Params<float>& p, Type target,
                                                bool has_output) {
  lowbit::detail::require(!has_output || !p.tied,
                          "has_output: a file with output.weight needs an untied latent model");
  std::map<std::string, Type> out;
  auto& mp = const_cast<Params<float>&>(p);
  for (const auto& [name, m] : linear_weights(mp, false))
    out[name] = export_type(gguf_tensor_name(name), 2, uint64_t(m->cols()), target, has_output);
  out["output"] = export_type("output.weight", 2, uint64_t(p.head().cols()), target, has_output);
  if (has_output)
    out["token_embd"] =
        export_type("token_embd.weight", 2, uint64_t(p.token_embd.cols()), target, has_output);
  return out;
}

namespace detail {

inline Mat<float>& named_weight(Params<float>& p, const std::string& name) {
  if (name == "output") return p.tied ? p.token_embd : p.output;
  if (name == "token_embd") return p.token_embd;
  for (auto& [n, m] : linear_weights(p, false))
    if (n == name) return *m;
  lowbit::detail::fail("name: '{}' is not a weight of the model", name);
}

}  // namespace detail

/// The start from each format's plain rounding (formats' reference rounding, what a format-only
/// quantizer writes): the latent weights are `fp32` (untied first when `untie`, as a file with
/// output.weight stores two tables), and fake quantization of them reproduces the rounding's
/// blocks exactly, so step 0 is that PTQ file. `types` as export_types() gives them.
inline FormatStart start_from_rounding(const Params<float>& fp32,
                                       const std::map<std::string, Type>& types, bool untie) {
  FormatStart s;
  s.latent = fp32;
  if (untie && s.latent.tied) {
    s.latent.tied = false;
    s.latent.output = s.latent.token_embd;
  }
  for (const auto& [name, type] : types)
    s.formats[name] =
        lowbit::qat::format_params_from_weights(type, detail::named_weight(s.latent, name));
  auto it = types.find("blk.0.attn_q");
  s.description = (it != types.end() ? lowbit::formats::to_string(it->second) : std::string("?")) +
                  " plain rounding";
  return s;
}

/// The start from a quantized llama GGUF (a PTQ file: GPTQ, AWQ, llama.cpp's quantizer, ...):
/// every tensor in the type the file stores it in, its parameters the blocks' own, and the latent
/// weights (norms included) the file's decoded values, so step 0 is that file exactly. The
/// latent model is untied when the file has output.weight. Throws for a tensor type QAT has no
/// grid for (IQ4_NL, IQ4_XS, ...).
inline FormatStart start_from_file(const lowbit::io::GgufFile& file, int context_length = 0) {
  const Weights w = load_weights(file, context_length);
  FormatStart s;
  s.latent = from_weights<float>(w);
  if (!w.tied_output && s.latent.tied) {  // a file with output.weight stores two tables
    s.latent.tied = false;
    s.latent.output = s.latent.token_embd;
  }
  auto add = [&](const std::string& name) {
    const lowbit::io::TensorInfo& t = file.tensor(gguf_tensor_name(name));
    s.formats[name] = lowbit::qat::format_params_from_blocks(t.type, file.raw(t).data, t.rows(),
                                                             t.cols());
  };
  for (const auto& [name, m] : linear_weights(s.latent, false)) add(name);
  if (s.latent.tied) {
    s.formats["output"] = lowbit::qat::format_params_from_blocks(
        file.tensor("token_embd.weight").type, file.raw("token_embd.weight").data,
        s.latent.token_embd.rows(), s.latent.token_embd.cols());
  } else {
    add("output");
    add("token_embd");
  }
  s.description = "file " + file.path();
  return s;
}

/// The tensors of the trained model for write_model_gguf(): every format_params() entry as its
/// blocks (QatModel::export_tensor), and in F32 the norm gains (trained in float) and any weight
/// without format parameters. A tied latent model's one table is token_embd.weight.
inline std::vector<ExportTensor> export_tensors(const QatModel& m) {
  std::vector<ExportTensor> out;
  const Params<float>& lat = m.latent();
  auto file_name = [&](const std::string& name) {
    return lat.tied && name == "output" ? std::string("token_embd.weight") : gguf_tensor_name(name);
  };
  auto f32 = [&](const std::string& name, const float* data, Index n, std::vector<uint64_t> ne) {
    ExportTensor t{name, std::move(ne), Type::F32, std::vector<uint8_t>(size_t(n) * 4)};
    std::memcpy(t.bytes.data(), data, t.bytes.size());
    out.push_back(std::move(t));
  };
  std::vector<std::string> names = quantizable_names(lat);
  if (!lat.tied) names.push_back("token_embd");
  auto& mp = const_cast<Params<float>&>(lat);
  for (const auto& name : names) {
    const Mat<float>& w = detail::named_weight(mp, name);
    auto it = m.format_params().find(name);
    if (it != m.format_params().end())
      out.push_back({file_name(name), {uint64_t(w.cols()), uint64_t(w.rows())}, it->second.type,
                     m.export_tensor(name)});
    else
      f32(file_name(name), w.data(), w.size(), {uint64_t(w.cols()), uint64_t(w.rows())});
  }
  f32("output_norm.weight", lat.output_norm.data(), lat.output_norm.size(),
      {uint64_t(lat.output_norm.size())});
  for (size_t l = 0; l < lat.layers.size(); ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const auto& L = lat.layers[l];
    f32(b + "attn_norm.weight", L.attn_norm.data(), L.attn_norm.size(), {uint64_t(L.attn_norm.size())});
    f32(b + "ffn_norm.weight", L.ffn_norm.data(), L.ffn_norm.size(), {uint64_t(L.ffn_norm.size())});
  }
  return out;
}

}  // namespace llama::train
