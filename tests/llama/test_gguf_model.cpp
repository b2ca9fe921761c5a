// test_gguf_model.cpp: the engine on quantized GGUF files (any mix of F32/F16/BF16 and block types):
// written with a different block type per tensor class, reloaded, run on lowbit's block kernels,
// compared with the decoded weights run in FP32 (weight-only: within fp32 rounding) and with a
// model whose Linears run the reference kernel on the same blocks (bit for bit); stories260K as
// Q8_0/Q4_0/Q4_1/Q5_0/Q5_1; llama.cpp's type choice; rejected files.
#include "../../examples/llama/gguf_model.hpp"
#include "../../examples/llama/perplexity.hpp"
#include "../../examples/llama/requantize.hpp"
#include "../../examples/llama/rotate.hpp"
#include "sanitized.hpp"
#include "tiny_llama.hpp"
#include "../support.hpp"

#include <lowbit/gemm/reference.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

namespace {

using lowbit::Index;
using lowbit::MatrixXfR;
using lowbit::formats::Type;
using lowbit::io::GgufFile;
using lowbit::io::Value;

using lowbit::test::have;
using lowbit::test::shared;

using lowbit::test::same_bits;

double rel_diff(const MatrixXfR& got, const MatrixXfR& want) {
  return double((got - want).cwiseAbs().maxCoeff()) / double(want.cwiseAbs().maxCoeff());
}

/// The wide tiny llama (or the 16-wide one) as an F32 GGUF.
std::vector<uint8_t> wide_f32_gguf(bool tied, uint32_t seed, bool wide = true) {
  std::mt19937 rng(seed);
  llama::Weights w =
      llama::train::to_weights(tiny::params<float>(tied, rng, wide ? tiny::wide_config(256, 512) : tiny::config()));
  w.tied_output = tied;
  return lowbit::io::serialize_gguf(tiny::metadata(w.config), llama::gguf_tensors(w));
}

/// Every tensor of `f` decoded to float (formats::decode_matrix: llama.cpp's dequantization).
llama::Weights decoded_weights(const GgufFile& f, int context) {
  const auto dec = [&](const std::string& name) {
    const auto& t = f.tensor(name);
    return lowbit::formats::decode_matrix(t.type, f.tensor_data(t), t.rows(), t.cols());
  };
  const auto vec = [&](const std::string& name) {
    const MatrixXfR m = dec(name);
    return Eigen::VectorXf(Eigen::Map<const Eigen::VectorXf>(m.data(), m.size()));
  };
  llama::Weights w;
  w.config = llama::config_from_gguf(f, context);
  w.token_embd = dec("token_embd.weight");
  w.tied_output = f.find_tensor("output.weight") == nullptr;
  w.output = w.tied_output ? w.token_embd : dec("output.weight");
  w.output_norm = vec("output_norm.weight");
  for (int l = 0; l < w.config.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    llama::LayerWeights L;
    for (int k = 0; k < 7; ++k) llama::linear_weight(L, k) = dec(p + llama::linear_names()[size_t(k)] + ".weight");
    L.attn_norm = vec(p + "attn_norm.weight");
    L.ffn_norm = vec(p + "ffn_norm.weight");
    w.layers.push_back(std::move(L));
  }
  return w;
}

/// A Linear on the same GGUF blocks that runs kernels::reference (the documented math), packed
/// independently from the file's bytes.
class ReferenceBlockLinear final : public llama::Linear {
 public:
  ReferenceBlockLinear(const GgufFile& f, const std::string& name, lowbit::ActivationQuant act) : act_(act) {
    const auto& t = f.tensor(name);
    w_ = lowbit::pack_weights(t.type, f.tensor_data(t), t.rows(), t.cols());
  }
  MatrixXfR forward(const MatrixXfR& x) const override {
    MatrixXfR y(x.rows(), w_.rows());
    if (act_ == lowbit::ActivationQuant::float32) {
      lowbit::kernels::reference::linear_block_f32(x.data(), x.rows(), x.cols(), w_, y.data(), y.cols(), 0, w_.rows());
    } else {
      lowbit::detail::QuantizedActivations a;
      lowbit::detail::quantize_activations(x.data(), x.rows(), x.cols(), x.cols(), w_, act_, a);
      lowbit::kernels::reference::linear_block_int(a, w_, y.data(), y.cols(), 0, w_.rows());
    }
    return y;
  }
  Index out_features() const override { return w_.rows(); }
  Index in_features() const override { return w_.cols(); }
  size_t bytes() const override { return w_.bytes(); }

 private:
  lowbit::PackedWeights w_;
  lowbit::ActivationQuant act_;
};

/// The model of `f` with every block Linear on ReferenceBlockLinear and every F32/F16/BF16 Linear
/// on Eigen, the embedding as load_model keeps it.
llama::Model reference_model(const GgufFile& f, int context, lowbit::ActivationQuant act) {
  const llama::Model m = llama::load_model(f, {context, act});
  const llama::Weights dw = decoded_weights(f, context);
  llama::ModelParts parts;
  parts.config = m.config();
  parts.token_embd = m.token_embedding();
  parts.output_norm = dw.output_norm;
  const auto lin = [&](const std::string& name, const MatrixXfR& decoded) -> std::shared_ptr<const llama::Linear> {
    const auto& t = f.tensor(name);
    if (lowbit::formats::info(t.type).quantized) return std::make_shared<ReferenceBlockLinear>(f, name, act);
    return std::make_shared<llama::Fp32Linear>(decoded);
  };
  parts.output = lin(dw.tied_output ? "token_embd.weight" : "output.weight", dw.output);
  for (int l = 0; l < dw.config.n_layers; ++l) {
    llama::BlockParts b;
    b.attn_norm = dw.layers[size_t(l)].attn_norm;
    b.ffn_norm = dw.layers[size_t(l)].ffn_norm;
    for (int k = 0; k < 7; ++k)
      b.linear[size_t(k)] = lin("blk." + std::to_string(l) + "." + llama::linear_names()[size_t(k)] + ".weight",
                                llama::linear_weight(dw.layers[size_t(l)], k));
    parts.blocks.push_back(std::move(b));
  }
  return llama::Model(std::move(parts));
}

/// Per weight of a block tensor, |d * sc * (u - zero)| + |m * mn|: what bounds its partial sums.
MatrixXfR block_magnitudes(const GgufFile& f, const lowbit::io::TensorInfo& t) {
  const lowbit::BlockWeights bw = lowbit::block_weights(t.type, f.tensor_data(t), t.rows(), t.cols());
  const Index K = bw.cols, S = bw.super_block, J = bw.sub_block;
  MatrixXfR mag(bw.rows, K);
  for (Index n = 0; n < bw.rows; ++n)
    for (Index k = 0; k < K; ++k) {
      const double d = lowbit::detail::half_bits_to_float(bw.d[size_t(n * (K / S) + k / S)]);
      const double sc = bw.sc.empty() ? 1 : bw.sc[size_t(n * (K / J) + k / J)];
      const double mo = bw.offset ? lowbit::detail::half_bits_to_float(bw.m[size_t(n * (K / S) + k / S)]) : 0;
      const double mn = bw.mn.empty() ? 1 : bw.mn[size_t(n * (K / J) + k / J)];
      mag(n, k) = float(std::fabs(d * sc * (int(bw.codes[size_t(n * K + k)]) - bw.zero)) + std::fabs(mo * mn));
    }
  return mag;
}

/// Checks, on the inputs the weight-only model really sees, that each block Linear's output is
/// x * decode(W)^T within the fp32 rounding bound of the block kernels' operation order:
/// |y - exact| <= 2^-24 * (J + K / J + 4) * sum_k |x_k| * (|d sc (u - zero)| + |m mn|).
/// Returns the number of outputs checked.
long check_layer_bounds(llama::Model& m, const GgufFile& f, const std::vector<int>& tokens) {
  std::map<std::string, std::vector<std::string>> consumers = {
      {"attn_q", {"attn_q", "attn_k", "attn_v"}}, {"attn_output", {"attn_output"}},
      {"ffn_gate", {"ffn_gate", "ffn_up"}}, {"ffn_down", {"ffn_down"}}};
  std::map<std::string, MatrixXfR> inputs;
  m.set_capture([&](int layer, const std::string& name, const MatrixXfR& x) {
    inputs[std::to_string(layer) + "." + name] = x;
  });
  m.reset();
  m.forward(tokens);
  m.set_capture({});
  long checked = 0;
  const bool tied = f.find_tensor("output.weight") == nullptr;
  for (const auto& [key, x] : inputs) {
    const int layer = std::stoi(key.substr(0, key.find('.')));
    const std::string name = key.substr(key.find('.') + 1);
    std::vector<std::pair<std::string, const llama::Linear*>> todo;
    if (layer < 0) {
      todo.emplace_back(tied ? "token_embd.weight" : "output.weight", &m.output());
    } else {
      for (const auto& c : consumers.at(name)) {
        const int k = int(std::find(llama::linear_names().begin(), llama::linear_names().end(), c) -
                          llama::linear_names().begin());
        todo.emplace_back("blk." + std::to_string(layer) + "." + c + ".weight", &m.linear(layer, k));
      }
    }
    for (const auto& [tname, lin] : todo) {
      const auto& t = f.tensor(tname);
      if (!lowbit::formats::info(t.type).quantized) continue;
      const MatrixXfR W = lowbit::formats::decode_matrix(t.type, f.tensor_data(t), t.rows(), t.cols());
      const MatrixXfR mag = block_magnitudes(f, t);
      const lowbit::formats::Format& fmt = lowbit::formats::format(t.type);
      const Index K = t.cols(), J = fmt.block_size == 32 ? 32 : fmt.sub_block;
      const MatrixXfR y = lin->forward(x);
      for (Index i = 0; i < x.rows(); ++i)
        for (Index n = 0; n < W.rows(); ++n) {
          double exact = 0, bound = 0;
          for (Index k = 0; k < K; ++k) {
            exact += double(x(i, k)) * double(W(n, k));
            bound += std::fabs(double(x(i, k))) * double(mag(n, k));
          }
          bound *= 0x1p-24 * double(J + K / J + 4);
          INFO(tname << " row " << i << " output " << n);
          REQUIRE(std::fabs(double(y(i, n)) - exact) <= bound);
          ++checked;
        }
    }
  }
  return checked;
}

/// The Linear types of a loaded model are the file's: BlockLinear with its type, activations and
/// exact bytes for block tensors, Fp32Linear with the stored bytes otherwise.
void check_linears(const llama::Model& m, const GgufFile& f, lowbit::ActivationQuant act) {
  const auto check = [&](const llama::Linear& lin, const std::string& name) {
    const auto& t = f.tensor(name);
    INFO(name);
    CHECK(lin.bytes() == t.n_bytes);
    const auto* b = dynamic_cast<const llama::BlockLinear*>(&lin);
    if (lowbit::formats::info(t.type).quantized) {
      REQUIRE(b != nullptr);
      CHECK(b->type() == t.type);
      CHECK(b->activations() == act);
      CHECK(b->packed().is_block());
    } else {
      CHECK(b == nullptr);
      CHECK(dynamic_cast<const llama::Fp32Linear*>(&lin) != nullptr);
    }
  };
  check(m.output(), f.find_tensor("output.weight") ? "output.weight" : "token_embd.weight");
  for (int l = 0; l < m.config().n_layers; ++l)
    for (int k = 0; k < 7; ++k)
      check(m.linear(l, k), "blk." + std::to_string(l) + "." + llama::linear_names()[size_t(k)] + ".weight");
  const auto& e = f.tensor("token_embd.weight");
  CHECK(m.token_embedding().bytes() == e.n_bytes);
  CHECK(m.token_embedding().quantized() == lowbit::formats::info(e.type).quantized);
}

/// The whole comparison for one quantized file: W·A8 and weight-only logits bit-identical to the
/// reference-kernel model under every Isa; weight-only within fp32 rounding of the decoded FP32
/// model (per Linear the proven bound, end to end `logit_bound`); token-by-token decoding.
void check_file(const GgufFile& f, int context, const std::vector<int>& tokens, double logit_bound) {
  llama::Model fp32(decoded_weights(f, context));
  const MatrixXfR want = fp32.forward(tokens);
  for (auto act : {lowbit::ActivationQuant::float32, lowbit::ActivationQuant::int8}) {
    INFO("activations " << lowbit::to_string(act));
    llama::Model q = llama::load_model(f, {context, act});
    check_linears(q, f, act);
    // The embedding: llama.cpp's decode of each looked-up row.
    std::vector<float> row(size_t(q.config().dim));
    for (Index id = 0; id < q.config().vocab_size; ++id) {
      q.token_embedding().lookup(id, row.data());
      const Eigen::Map<const Eigen::RowVectorXf> got(row.data(), Index(row.size()));
      CHECK(got == fp32.token_embedding().table().row(id));
    }
    llama::Model ref = reference_model(f, context, act);
    const MatrixXfR r = ref.forward(tokens);
    MatrixXfR first;
    for (lowbit::cpu::Isa isa : lowbit::cpu::supported_isas()) {
      lowbit::cpu::ScopedIsa scoped(isa);
      INFO("isa " << lowbit::cpu::to_string(isa));
      q.reset();
      const MatrixXfR got = q.forward(tokens);
      CHECK(same_bits(got, r));  // exactly the documented math of gemm/reference.hpp
      if (act == lowbit::ActivationQuant::float32) {
        CHECK(rel_diff(got, want) < logit_bound);
      } else {
        CHECK(rel_diff(got, want) < 0.05);  // int8 activations: a small, real difference
        CHECK(rel_diff(got, want) > 0.0);
      }
    }
    if (act == lowbit::ActivationQuant::float32) CHECK(check_layer_bounds(q, f, tokens) > 0);
    // Decoding one token at a time through the KV cache (GEMV: M = 1) is the reference model's
    // decoding bit for bit, and within rounding of the whole-chunk logits. (Attention's Eigen
    // products round differently for one and many rows; with int8 activations that can move an
    // activation code, so there the chunk comparison is the loose one.)
    q.reset();
    ref.reset();
    MatrixXfR steps(Index(tokens.size()), q.config().vocab_size), ref_steps = steps;
    for (size_t i = 0; i < tokens.size(); ++i) {
      steps.row(Index(i)) = q.forward({tokens[i]});
      ref_steps.row(Index(i)) = ref.forward({tokens[i]});
    }
    CHECK(same_bits(steps, ref_steps));
    CHECK(rel_diff(steps, r) < (act == lowbit::ActivationQuant::float32 ? 1e-5 : 0.05));
  }
}

// Weight-only logits against the decoded FP32 model: both are the same function of the same
// weights and differ only by the operation order of the fp32 sums (block kernels: fma chains per
// sub-block; Eigen: its own blocking). Measured max |Δ| / max |logit|: 4.8e-7 .. 1.3e-6 on the files
// here; a wrong code, scale or sign is O(1). 1e-5 is about 170 float ulps.
constexpr double kWeightOnlyBound = 1e-5;

}  // namespace

TEST_CASE("gguf model: a tiny llama with a block type per tensor class, reloaded, runs as its decoded weights") {
  Eigen::setNbThreads(1);
  const auto src_bytes = wide_f32_gguf(false, 5);
  const GgufFile src = GgufFile::from_bytes(src_bytes.data(), src_bytes.size());
  llama::RequantOptions o;
  o.overrides = {{"attn_q", Type::Q4_K},   {"attn_k", Type::Q5_K},  {"attn_v", Type::Q6_K},
                 {"attn_output", Type::Q3_K}, {"ffn_gate", Type::Q2_K}, {"ffn_up", Type::Q4_0},
                 {"ffn_down", Type::Q5_1}, {"output", Type::Q8_0},  {"token_embd", Type::Q4_1}};
  const std::string path = "test_gguf_model_mixed.gguf";
  const llama::RequantResult res = llama::requantize_model(src, path, o);
  const GgufFile f = GgufFile::open(path);
  CHECK(res.file_bytes == f.file_size());
  for (const auto& t : f.tensors()) {
    INFO(t.name);
    const std::string cls = llama::tensor_class(t.name);
    if (t.ne.size() == 1)
      CHECK(t.type == Type::F32);  // norms stay float
    else
      CHECK(t.type == o.overrides.at(cls));
    CHECK(t.n_bytes == lowbit::formats::row_bytes(t.type, t.ne[0]) * uint64_t(t.rows()));
  }
  CHECK(f.get_int("general.quantization_version", 0) == 2);
  CHECK(f.get_string("general.name", "") == "synthetic");
  const std::vector<int> tokens = {1, 5, 31, 7, 7, 0, 13, 2, 21, 4, 9, 30, 17, 3, 3, 28};
  check_file(f, 0, tokens, kWeightOnlyBound);
  // Model::linear_bytes counts exactly the stored bytes of the Linears and the head.
  const llama::Model q = llama::load_model(f);
  uint64_t want = 0;
  for (const auto& t : f.tensors())
    if (t.ne.size() == 2 && t.name != "token_embd.weight") want += t.n_bytes;
  CHECK(q.linear_bytes() == want);
  std::remove(path.c_str());
}

TEST_CASE("gguf model: a tied head on a quantized embedding, F16 and BF16 Linears beside block ones") {
  Eigen::setNbThreads(1);
  const auto src_bytes = wide_f32_gguf(true, 6);
  const GgufFile src = GgufFile::from_bytes(src_bytes.data(), src_bytes.size());
  REQUIRE(src.find_tensor("output.weight") == nullptr);
  llama::RequantOptions o;
  o.type = Type::Q4_K;
  o.overrides = {{"attn_k", Type::F16}, {"ffn_down", Type::BF16}, {"attn_v", Type::Q5_0}};
  const std::string path = "test_gguf_model_tied.gguf";
  llama::requantize_model(src, path, o);
  const GgufFile f = GgufFile::open(path);
  // llama.cpp's choice for a tied table: the head's type (Q4_K target -> Q6_K; 256 fits it).
  CHECK(f.tensor("token_embd.weight").type == Type::Q6_K);
  CHECK(f.tensor("blk.0.attn_q.weight").type == Type::Q4_K);
  CHECK(f.tensor("blk.1.attn_k.weight").type == Type::F16);
  CHECK(f.tensor("blk.1.ffn_down.weight").type == Type::BF16);
  const llama::Model q = llama::load_model(f);
  const auto* head = dynamic_cast<const llama::BlockLinear*>(&q.output());
  REQUIRE(head != nullptr);
  CHECK(head->type() == Type::Q6_K);
  CHECK(head->bytes() == f.tensor("token_embd.weight").n_bytes);
  CHECK(q.linear(0, 1).bytes() == 128 * 256 * 2);  // F16: the stored bytes, not 4 per weight
  check_file(f, 0, {2, 9, 9, 30, 1, 0, 4, 17, 21, 6}, kWeightOnlyBound);
  std::remove(path.c_str());
}

TEST_CASE("gguf model: llama.cpp's type choice and fallbacks") {
  using llama::fitting_type;
  CHECK(fitting_type(Type::Q4_K, 256) == Type::Q4_K);
  CHECK(fitting_type(Type::Q4_K, 64) == Type::Q5_0);
  CHECK(fitting_type(Type::Q5_K, 64) == Type::Q5_1);
  CHECK(fitting_type(Type::Q6_K, 64) == Type::Q8_0);
  CHECK(fitting_type(Type::Q2_K, 96) == Type::Q4_0);
  CHECK(fitting_type(Type::Q3_K, 96) == Type::Q4_0);
  CHECK(fitting_type(Type::IQ4_XS, 64) == Type::IQ4_NL);
  CHECK(fitting_type(Type::Q6_K, 172) == Type::F16);
  CHECK(fitting_type(Type::Q4_0, 172) == Type::F16);
  CHECK(fitting_type(Type::Q8_0, 172) == Type::F16);
  CHECK(llama::tensor_class("blk.12.ffn_down.weight") == "ffn_down");
  CHECK(llama::tensor_class("output.weight") == "output");
  CHECK(llama::tensor_class("token_embd.weight") == "token_embd");
  lowbit::io::TensorInfo t;
  const auto type_of = [&](const std::string& name, std::vector<uint64_t> ne, Type target, bool has_output) {
    t.name = name;
    t.ne = std::move(ne);
    t.type = Type::F32;
    llama::RequantOptions o;
    o.type = target;
    return llama::requant_type(t, o, has_output);
  };
  // stories260K's shapes: 64-wide rows, FFN-down 172 wide, vocab 512.
  for (Type target : {Type::Q8_0, Type::Q4_0, Type::Q4_1, Type::Q5_0, Type::Q5_1}) {
    INFO(lowbit::formats::to_string(target));
    CHECK(type_of("blk.0.attn_q.weight", {64, 64}, target, true) == target);
    CHECK(type_of("blk.0.ffn_down.weight", {172, 64}, target, true) == Type::F16);
    CHECK(type_of("blk.0.ffn_up.weight", {64, 172}, target, true) == target);
    CHECK(type_of("output.weight", {64, 512}, target, true) == Type::Q8_0);  // Q6_K does not fit 64
    CHECK(type_of("token_embd.weight", {64, 512}, target, true) == target);
    CHECK(type_of("token_embd.weight", {64, 512}, target, false) == Type::Q8_0);  // tied: the head's
    CHECK(type_of("blk.0.attn_norm.weight", {64}, target, true) == Type::F32);
  }
  CHECK(type_of("output.weight", {4096, 32000}, Type::Q4_0, true) == Type::Q6_K);
  CHECK(type_of("output.weight", {4096, 32000}, Type::Q8_0, true) == Type::Q8_0);
  CHECK(type_of("blk.3.attn_q.weight", {4096, 4096}, Type::Q4_K, true) == Type::Q4_K);
  CHECK(type_of("blk.3.attn_q.weight", {64, 64}, Type::Q4_K, true) == Type::Q5_0);
}

TEST_CASE("gguf model: stories260K written as Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and a per-class mix runs natively") {
  const std::string model_path = shared("models/stories260K.gguf");
  const std::string text_path = shared("data/tinystories_val.txt");
  if (!have(model_path) || !have(text_path)) {
    WARN("SKIPPED: " << model_path << " or " << text_path << " is absent (needs ../shared)");
    return;
  }
  Eigen::setNbThreads(1);
  const GgufFile src = GgufFile::open(model_path);
  const llama::Tokenizer tok = llama::Tokenizer::from_gguf(src);
  const auto prompt = tok.encode("Once upon a time, there was a little girl named Lily. She loved to play", true);
  std::ifstream in(text_path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const auto eval = llama::split_halves(llama::split_chunks(ss.str())).evaluation;
  llama::PerplexityOptions popt;
  popt.min_predictions = kSanitized ? 300 : 3000;
  llama::Model fp32_model(llama::load_weights(src, 512));
  const auto fp32 = llama::evaluate_perplexity(eval, tok, [&](const std::vector<int>& t) {
    fp32_model.reset();
    return fp32_model.forward(t);
  }, popt);

  struct Case {
    const char* name;
    llama::RequantOptions o;
    double max_ppl_rise;  // W·A8 perplexity over FP32's, on this short run (a loose sanity bound)
  };
  std::vector<Case> cases;
  for (Type t : {Type::Q8_0, Type::Q4_0, Type::Q4_1, Type::Q5_0, Type::Q5_1}) {
    llama::RequantOptions o;
    o.type = t;
    cases.push_back({"", o, t == Type::Q8_0 ? 0.01 : 0.25});
  }
  llama::RequantOptions mix;
  mix.overrides = {{"attn_q", Type::Q4_0}, {"attn_k", Type::Q4_1},  {"attn_v", Type::Q5_0},
                   {"attn_output", Type::Q5_1}, {"ffn_gate", Type::Q8_0}, {"ffn_up", Type::Q4_1},
                   {"ffn_down", Type::F16},   {"output", Type::Q8_0}, {"token_embd", Type::Q5_0}};
  cases.push_back({"mix", mix, 0.25});
  if (kSanitized) cases = {cases[1], cases.back()};
  for (const Case& c : cases) {
    const std::string label = c.o.overrides.empty() ? lowbit::formats::to_string(c.o.type) : std::string(c.name);
    INFO(label);
    const std::string path = "test_gguf_model_stories260K_" + label + ".gguf";
    const auto res = llama::requantize_model(src, path, c.o);
    const GgufFile f = GgufFile::open(path);
    CHECK(res.file_bytes == f.file_size());
    CHECK(f.file_size() < src.file_size());
    if (c.o.overrides.empty()) {
      CHECK(f.get_int("general.file_type", -1) == int64_t(lowbit::io::file_type_for(c.o.type)));
      for (const auto& t : f.tensors()) {
        INFO(t.name);
        const Type want = t.ne.size() == 1 ? Type::F32
                          : llama::tensor_class(t.name) == "ffn_down" ? Type::F16
                          : t.name == "output.weight" ? Type::Q8_0
                                                      : c.o.type;
        CHECK(t.type == want);
      }
    }
    // The tokenizer and every key came along.
    CHECK(llama::Tokenizer::from_gguf(f).encode("Once upon a time", true) == tok.encode("Once upon a time", true));
    check_file(f, 512, prompt, kWeightOnlyBound);
    // The protocol on the file, as llama_run runs it: W·A8 close to FP32 on a short run.
    llama::Model q = llama::load_model(f, {512, lowbit::ActivationQuant::int8});
    const auto r = llama::evaluate_perplexity(eval, tok, [&](const std::vector<int>& t) {
      q.reset();
      return q.forward(t);
    }, popt);
    CHECK(r.predictions == fp32.predictions);
    CHECK(r.ppl < fp32.ppl * (1 + c.max_ppl_rise));
    CHECK(r.ppl > fp32.ppl * 0.97);
    std::remove(path.c_str());
  }
}

TEST_CASE("gguf model: rejected files and options") {
  using Catch::Matchers::Contains;
  const auto src_bytes = wide_f32_gguf(false, 7);
  const GgufFile src = GgufFile::from_bytes(src_bytes.data(), src_bytes.size());
  const auto write = [&](const llama::RequantOptions& o) {
    const std::string path = "test_gguf_model_bad.gguf";
    llama::requantize_model(src, path, o);
    auto bytes = [&] {
      std::ifstream in(path, std::ios::binary);
      return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    }();
    std::remove(path.c_str());
    return bytes;
  };
  // A Linear in a type without a kernel layout is refused, naming the tensor and the type; the
  // same type as an embedding (decoded per row) is fine.
  llama::RequantOptions o;
  o.overrides = {{"blk.1.attn_v.weight", Type::IQ4_NL}, {"token_embd", Type::IQ4_XS}};
  auto b = write(o);
  auto f = GgufFile::from_bytes(b.data(), b.size());
  CHECK_THROWS_WITH(llama::load_model(f), Contains("blk.1.attn_v.weight") && Contains("IQ4_NL") && Contains("Q6_K"));
  o.overrides = {{"token_embd", Type::IQ4_XS}};
  b = write(o);
  f = GgufFile::from_bytes(b.data(), b.size());
  const llama::Model m = llama::load_model(f);
  CHECK(m.token_embedding().type() == Type::IQ4_XS);
  // A block with a NaN scale is refused when loading, naming the tensor and the block.
  o.overrides = {{"blk.0.ffn_up.weight", Type::Q4_0}, {"token_embd", Type::Q8_0}};
  b = write(o);
  for (const std::string name : {"blk.0.ffn_up.weight", "token_embd.weight"}) {
    auto bad = b;
    f = GgufFile::from_bytes(bad.data(), bad.size());
    const size_t at = size_t(f.data_offset() + f.tensor(name).offset) + 2 * 18 * (name[0] == 'b' ? 1 : 0);
    bad[at] = 0x00;
    bad[at + 1] = 0x7E;  // fp16 NaN in the first (or second) block's d
    const auto g = GgufFile::from_bytes(bad.data(), bad.size());
    INFO(name);
    CHECK_THROWS_WITH(llama::load_model(g), Contains(name) && Contains("finite"));
  }
  // On the 16-wide llama no block fits: the automatic choice falls back to F16 (llama.cpp's
  // last resort), an explicit type that does not fit is refused before anything is written.
  const auto narrow_bytes = wide_f32_gguf(false, 8, false);
  const GgufFile narrow = GgufFile::from_bytes(narrow_bytes.data(), narrow_bytes.size());
  o = {};
  o.type = Type::Q4_0;
  const auto r = llama::requantize_model(narrow, "test_gguf_model_narrow.gguf", o);
  for (const auto& [name, type] : r.types)
    CHECK(type == (name.find("_norm") == std::string::npos ? Type::F16 : Type::F32));
  CHECK_FALSE(llama::has_block_tensors(GgufFile::open("test_gguf_model_narrow.gguf")));
  std::remove("test_gguf_model_narrow.gguf");
  o.overrides = {{"ffn_down", Type::Q4_0}};
  CHECK_THROWS_WITH(llama::requantize_model(narrow, "test_gguf_model_never.gguf", o),
                    Contains("ffn_down") && Contains("does not fit Q4_0"));
  CHECK_FALSE(have("test_gguf_model_never.gguf"));
  // BlockLinear checks its activation mode; Embedding its type.
  const auto& t = f.tensor("blk.0.attn_q.weight");
  CHECK_THROWS_AS(llama::BlockLinear(t.type, f.tensor_data(t), t.rows(), t.cols(), lowbit::ActivationQuant(99)),
                  lowbit::Error);
  CHECK_THROWS_AS(llama::Embedding(Type::IQ2_XXS, b.data(), 2, 256), lowbit::Error);
  CHECK_THROWS_AS(llama::Embedding(Type::Q4_0, b.data(), 2, 48), lowbit::Error);
  CHECK_THROWS_AS(llama::Embedding(Type::Q4_0, nullptr, 2, 64), lowbit::Error);
  // A Model from parts checks every shape.
  llama::ModelParts parts;
  parts.config = m.config();
  parts.token_embd = m.token_embedding();
  CHECK_THROWS_WITH(llama::Model(parts), Contains("parts.output_norm"));
}
