// test_format_qat.cpp: whole-model QAT on GGUF format grids: the exported file, reloaded and
// decoded, is the trained model's fake-quantized weights bit for bit and its logits are the
// training forward's up to fp32 rounding; llama.cpp's per-tensor types; training lowers the loss.
#include "../../examples/llama/engine.hpp"
#include "../../examples/llama/gguf_export.hpp"
#include "../../examples/llama/model.hpp"
#include "../../examples/llama/perplexity.hpp"
#include "../../examples/llama/tokenizer.hpp"
#include "../../examples/llama_train/format_qat.hpp"
#include "sanitized.hpp"
#include "tiny_llama.hpp"

#include <lowbit/formats/format.hpp>
#include <lowbit/io/gguf.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <unistd.h>

using namespace llama::train;
using lowbit::formats::Type;
namespace io = lowbit::io;

namespace {

std::string model_path() { return std::string(LOWBIT_SHARED_DIR) + "/models/stories260K.gguf"; }
std::string text_path() { return std::string(LOWBIT_SHARED_DIR) + "/data/tinystories_val.txt"; }
bool have_model() { return bool(std::ifstream(model_path())) && bool(std::ifstream(text_path())); }

std::string temp_path(const std::string& name) {
  return "/tmp/lowbit_test_format_qat_" + std::to_string(getpid()) + "_" + name;
}

// A llama GGUF in F32 of `p` (with output.weight when `with_output`), as a converter writes one.
void write_source(const std::string& path, const Params<float>& p, bool with_output) {
  const llama::Config& c = p.config;
  io::Metadata m;
  m.emplace_back("general.architecture", io::Value::of_string("llama"));
  m.emplace_back("llama.embedding_length", io::Value::of_uint32(uint32_t(c.dim)));
  m.emplace_back("llama.feed_forward_length", io::Value::of_uint32(uint32_t(c.hidden_dim)));
  m.emplace_back("llama.block_count", io::Value::of_uint32(uint32_t(c.n_layers)));
  m.emplace_back("llama.attention.head_count", io::Value::of_uint32(uint32_t(c.n_heads)));
  m.emplace_back("llama.attention.head_count_kv", io::Value::of_uint32(uint32_t(c.n_kv_heads)));
  m.emplace_back("llama.vocab_size", io::Value::of_uint32(uint32_t(c.vocab_size)));
  m.emplace_back("llama.context_length", io::Value::of_uint32(uint32_t(c.context_length)));
  m.emplace_back("llama.rope.dimension_count", io::Value::of_uint32(uint32_t(c.rope_dim)));
  m.emplace_back("llama.attention.layer_norm_rms_epsilon", io::Value::of_float32(c.rms_eps));
  std::vector<io::TensorF32> t;
  t.push_back(io::TensorF32::from_matrix("token_embd.weight", p.token_embd));
  t.push_back(io::TensorF32::from_vector("output_norm.weight", p.output_norm));
  if (with_output) t.push_back(io::TensorF32::from_matrix("output.weight", p.head()));
  for (size_t l = 0; l < p.layers.size(); ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const auto& L = p.layers[l];
    t.push_back(io::TensorF32::from_matrix(b + "attn_q.weight", L.wq));
    t.push_back(io::TensorF32::from_matrix(b + "attn_k.weight", L.wk));
    t.push_back(io::TensorF32::from_matrix(b + "attn_v.weight", L.wv));
    t.push_back(io::TensorF32::from_matrix(b + "attn_output.weight", L.wo));
    t.push_back(io::TensorF32::from_vector(b + "attn_norm.weight", L.attn_norm));
    t.push_back(io::TensorF32::from_matrix(b + "ffn_gate.weight", L.w_gate));
    t.push_back(io::TensorF32::from_matrix(b + "ffn_down.weight", L.w_down));
    t.push_back(io::TensorF32::from_matrix(b + "ffn_up.weight", L.w_up));
    t.push_back(io::TensorF32::from_vector(b + "ffn_norm.weight", L.ffn_norm));
  }
  io::write_gguf(path, m, t);
}

bool same_bits(const Mat<float>& a, const lowbit::MatrixXfR& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * size_t(a.size())) == 0;
}

// Every weight of the reloaded file against the trained model's effective weights (the fake
// quantized ones the training forward used), bit for bit; the norms against the latent gains.
void require_same_model(const QatModel& m, const llama::Weights& w) {
  const Params<float>& eff = m.effective();
  REQUIRE(same_bits(eff.token_embd, w.token_embd));
  REQUIRE(same_bits(eff.output, w.output));
  REQUIRE((m.latent().output_norm.array() == w.output_norm.array()).all());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const auto& E = eff.layers[l];
    const auto& L = w.layers[l];
    INFO("layer " << l);
    REQUIRE(same_bits(E.wq, L.wq));
    REQUIRE(same_bits(E.wk, L.wk));
    REQUIRE(same_bits(E.wv, L.wv));
    REQUIRE(same_bits(E.wo, L.wo));
    REQUIRE(same_bits(E.w_gate, L.w_gate));
    REQUIRE(same_bits(E.w_down, L.w_down));
    REQUIRE(same_bits(E.w_up, L.w_up));
    REQUIRE((m.latent().layers[l].attn_norm.array() == L.attn_norm.array()).all());
    REQUIRE((m.latent().layers[l].ffn_norm.array() == L.ffn_norm.array()).all());
  }
}

// The largest |engine logit - training-forward logit| relative to (1 + |training logit|).
double logit_gap(const llama::Weights& w, const Params<float>& eff, const std::vector<int>& tokens) {
  llama::Model engine(w);
  const lowbit::MatrixXfR a = engine.forward(tokens);
  const Mat<float> b = forward(eff, tokens);
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  double gap = 0;
  for (Index i = 0; i < a.size(); ++i)
    gap = std::max(gap, std::fabs(double(a.data()[i]) - double(b.data()[i])) /
                            (1.0 + std::fabs(double(b.data()[i]))));
  return gap;
}

std::vector<std::vector<int>> random_sequences(std::mt19937& rng, int n, int len, int vocab) {
  std::vector<std::vector<int>> out;
  for (int s = 0; s < n; ++s) {
    std::vector<int> seq(static_cast<size_t>(len));
    for (auto& t : seq) t = int(rng() % uint32_t(vocab));
    out.push_back(seq);
  }
  return out;
}

// The bound on logit_gap: the engine and the training forward compute the same network in fp32
// with different operation orders (RMSNorm as x * g / sqrt(.) or x * g * (1 / sqrt(.)), the
// attention's softmax and GEMM blocking), a few ulps per operation; measured up to 1.3e-5 here,
// the bound is the one the FP32 engine-vs-training test uses (test_train_qat), 1e-4 of 1 + |logit|.
constexpr double kLogitBound = 1e-4;

}  // namespace

TEST_CASE("format QAT: llama.cpp's tensor types for an export") {
  CHECK(llama::fitting_type(Type::Q4_0, 64) == Type::Q4_0);
  CHECK(llama::fitting_type(Type::Q4_0, 172) == Type::F16);  // llama.cpp refuses; lowbit: F16
  CHECK(llama::fitting_type(Type::Q4_K, 96) == Type::Q5_0);
  CHECK(llama::fitting_type(Type::Q5_K, 64) == Type::Q5_1);
  CHECK(llama::fitting_type(Type::Q6_K, 64) == Type::Q8_0);
  CHECK(llama::fitting_type(Type::Q2_K, 64) == Type::Q4_0);
  CHECK(llama::fitting_type(Type::Q3_K, 172) == Type::F16);
  CHECK(llama::fitting_type(Type::IQ4_XS, 32) == Type::IQ4_NL);
  CHECK(llama::head_type(Type::Q4_0, 64) == Type::Q8_0);   // Q6_K does not fit 64: Q8_0
  CHECK(llama::head_type(Type::Q4_0, 256) == Type::Q6_K);
  CHECK(llama::head_type(Type::Q8_0, 256) == Type::Q8_0);
  CHECK(llama::head_type(Type::Q4_K, 96) == Type::Q8_0);   // rows do not fit the target
  CHECK(llama::export_type("blk.0.attn_norm.weight", 1, 64, Type::Q4_0, true) == Type::F32);
  CHECK(llama::export_type("token_embd.weight", 2, 64, Type::Q4_0, true) == Type::Q4_0);
  CHECK(llama::export_type("token_embd.weight", 2, 64, Type::Q4_0, false) == Type::Q8_0);
  CHECK(llama::export_type("output.weight", 2, 64, Type::Q5_1, true) == Type::Q8_0);
  CHECK(llama::export_type("blk.3.ffn_down.weight", 2, 172, Type::Q5_0, true) == Type::F16);
}

TEST_CASE("format QAT: the exported GGUF reloads as the trained model, bit for bit") {
  struct Case {
    Type target;
    int dim, hidden;
    bool with_output;
  };
  // 64-wide rows fit 32-weight blocks, FFN-down's 48 none (F16); 256-wide rows fit the
  // K-quants, FFN-down's 96 falls back to a 32-weight format (Q4_K -> Q5_0, Q2_K/Q3_K -> Q4_0).
  const Case cases[] = {
      {Type::Q4_0, 64, 48, true},  {Type::Q4_1, 64, 48, false}, {Type::Q5_0, 64, 48, true},
      {Type::Q5_1, 64, 48, true},  {Type::Q8_0, 64, 48, false}, {Type::Q4_K, 256, 96, true},
      {Type::Q2_K, 256, 96, false}, {Type::Q3_K, 256, 96, true}, {Type::Q5_K, 256, 96, true},
      {Type::Q6_K, 256, 96, false},
  };
  for (const Case& c : cases) {
    INFO(lowbit::formats::to_string(c.target) << " dim " << c.dim << " output.weight " << c.with_output);
    std::mt19937 rng(21);
    const Params<float> fp32 = tiny::params<float>(!c.with_output, rng, tiny::wide_config(c.dim, c.hidden));
    const std::string src = temp_path("src.gguf"), out = temp_path("out.gguf");
    write_source(src, fp32, c.with_output);
    const auto source = io::GgufFile::open(src);
    const Params<float> teacher = from_weights<float>(llama::load_weights(source));
    REQUIRE(teacher.tied == !c.with_output);  // a random output.weight: an untied model
    const auto types = export_types(teacher, c.target, c.with_output);
    FormatStart start = start_from_rounding(teacher, types, c.with_output);
    QatModel model(start.latent, start.formats);
    // Step 0 is the format's plain rounding: the effective weights are its decode.
    const auto& q0 = model.format_params().at("blk.1.attn_q");
    const auto ref = lowbit::formats::quantize_matrix(q0.type, teacher.layers[1].wq);
    REQUIRE(same_bits(model.effective().layers[1].wq,
                      lowbit::formats::decode_matrix(q0.type, ref.data(), q0.rows, q0.cols)));
    QatOptions opt;
    opt.steps = 4;
    opt.batch_tokens = 20;
    opt.lr = 5e-3f;
    opt.scale_lr_ratio = 1.0f;  // move the grids visibly in a few steps
    opt.loss = {0.5, 1.0};
    const auto data = random_sequences(rng, 6, 8, fp32.config.vocab_size);
    model.train(data, &teacher, opt);
    // The parameters moved off the start.
    REQUIRE(model.format_params().at("blk.0.attn_q").scale != start.formats.at("blk.0.attn_q").scale);
    io::Metadata extra;
    extra.emplace_back("lowbit.qat.steps", io::Value::of_uint32(4));
    llama::write_model_gguf(out, source, export_tensors(model), c.target, extra);
    const auto file = io::GgufFile::open(out);
    // The types llama.cpp's quantizer gives this export.
    for (const auto& t : file.tensors()) {
      INFO(t.name);
      CHECK(t.type == llama::export_type(t.name, int(t.ne.size()), t.ne[0], c.target, c.with_output));
    }
    CHECK((file.find_tensor("output.weight") != nullptr) == c.with_output);
    CHECK(file.get_int("lowbit.qat.steps", 0) == 4);
    CHECK(file.get_int("general.file_type", -1) == int64_t(io::file_type_for(c.target)));
    CHECK(file.get_string("general.architecture", "") == "llama");
    const llama::Weights w = llama::load_weights(file);
    require_same_model(model, w);
    // The logits of the reloaded file on the engine are the training forward's.
    for (const auto& seq : data) CHECK(logit_gap(w, model.effective(), seq) <= kLogitBound);
    std::remove(src.c_str());
    std::remove(out.c_str());
  }
}

TEST_CASE("format QAT: training on a format grid lowers the loss; the STE masks clipped weights") {
  std::mt19937 rng(22);
  const Params<float> p = tiny::params<float>(true, rng, tiny::wide_config(64, 64));
  for (Type target : {Type::Q4_0, Type::Q4_1}) {
    INFO(lowbit::formats::to_string(target));
    FormatStart s = start_from_rounding(p, export_types(p, target, false), false);
    // Shrink one Q4 scale so most of that block clips: those latent weights must not move.
    auto& fq = s.formats.at("blk.0.attn_q");
    fq.scale[0] *= 0.02f;
    QatModel model(s.latent, s.formats);
    QatOptions opt;
    opt.steps = 60;
    opt.batch_tokens = 12;
    opt.lr = 2e-2f;
    opt.lsq = true;
    opt.loss = {1.0, 0.0};
    const std::vector<std::vector<int>> data = {{1, 5, 9, 13, 17, 21, 25, 29}, {1, 2, 3, 4, 5, 6}};
    QatModel one(s.latent, s.formats);
    QatOptions o1 = opt;
    o1.steps = 1;
    o1.lsq = false;
    one.train(data, nullptr, o1);
    const auto b = lowbit::qat::format_block_params(fq, 0);
    const auto sp = lowbit::formats::format(target).sub_block_params(b, 0);
    int clipped = 0;
    for (Index c = 0; c < 32; ++c) {
      const double t = (double(p.layers[0].wq(0, c)) - (target == Type::Q4_1 ? sp.offset : 0.0)) / sp.scale;
      const double u = std::nearbyint(t);
      const auto& f = lowbit::formats::format(target);
      if (u < f.qmin || u > f.qmax) {
        ++clipped;
        REQUIRE(one.latent().layers[0].wq(0, c) == p.layers[0].wq(0, c));
      }
    }
    REQUIRE(clipped > 0);
    const auto log = model.train(data, nullptr, opt);
    REQUIRE(log.back().ce < 0.5 * log.front().ce);
  }
}

TEST_CASE("format QAT: rejects bad input") {
  std::mt19937 rng(23);
  const Params<float> p = tiny::params<float>(true, rng, tiny::wide_config(64, 48));
  auto types = export_types(p, Type::Q4_0, false);
  FormatStart s = start_from_rounding(p, types, false);
  auto bad = s.formats;
  bad["token_embd"] = s.formats.at("output");  // the latent model is tied: one table
  REQUIRE_THROWS_WITH(QatModel(s.latent, bad), Catch::Contains("tied"));
  bad = s.formats;
  bad["blk.0.attn_k"] = s.formats.at("blk.0.attn_q");  // 64 rows instead of 32
  REQUIRE_THROWS_AS(QatModel(s.latent, bad), lowbit::Error);
  bad = s.formats;
  bad["blk.7.attn_q"] = s.formats.at("blk.0.attn_q");
  REQUIRE_THROWS_WITH(QatModel(s.latent, bad), Catch::Contains("blk.7.attn_q"));
  REQUIRE_THROWS_WITH(export_types(p, Type::Q4_0, true), Catch::Contains("untied"));
  REQUIRE_THROWS_AS(start_from_rounding(p, {{"blk.0.ffn_down", Type::Q4_0}}, false), lowbit::Error);
  QatModel m(s.latent, s.formats);
  REQUIRE_THROWS_WITH(m.export_tensor("output_norm"), Catch::Contains("output_norm"));
  // The writer refuses the source as output, a tensor the source lacks and a wrong byte count.
  const std::string src = temp_path("bad_src.gguf");
  write_source(src, p, false);
  const auto source = io::GgufFile::open(src);
  auto tensors = export_tensors(m);
  REQUIRE_THROWS_WITH(llama::write_model_gguf(src, source, tensors, Type::Q4_0), Catch::Contains("same file"));
  auto extra = tensors;
  extra.push_back({"nope.weight", {4}, Type::F32, std::vector<uint8_t>(16)});
  REQUIRE_THROWS_WITH(llama::write_model_gguf(temp_path("x.gguf"), source, extra, Type::Q4_0),
                      Catch::Contains("nope.weight"));
  auto short_bytes = tensors;
  short_bytes[0].bytes.pop_back();
  REQUIRE_THROWS_WITH(llama::write_model_gguf(temp_path("x.gguf"), source, short_bytes, Type::Q4_0),
                      Catch::Contains(short_bytes[0].name));
  REQUIRE_FALSE(std::ifstream(temp_path("x.gguf")));
  std::remove(src.c_str());
}

TEST_CASE("format QAT on stories260K: Q4_0 export reloads bit for bit, logits within fp32 rounding") {
  if (!have_model()) {
    WARN("skipped: " << model_path() << " or " << text_path() << " not found");
    return;
  }
  const auto source = io::GgufFile::open(model_path());
  const llama::Weights w0 = llama::load_weights(source, 512);
  const llama::Tokenizer tok = llama::Tokenizer::from_gguf(source);
  const Params<float> teacher = from_weights<float>(w0);
  const bool has_output = source.find_tensor("output.weight") != nullptr;
  REQUIRE(has_output);  // stories260K stores output.weight (a copy of token_embd)
  Params<float> untied = teacher;
  untied.tied = false;
  untied.output = untied.token_embd;
  const auto types = export_types(untied, Type::Q4_0, has_output);
  CHECK(types.at("blk.0.ffn_down") == Type::F16);  // 172-wide rows
  CHECK(types.at("output") == Type::Q8_0);
  CHECK(types.at("token_embd") == Type::Q4_0);
  CHECK(types.at("blk.4.attn_v") == Type::Q4_0);
  FormatStart start = start_from_rounding(teacher, types, true);
  QatModel model(start.latent, start.formats);
  std::ifstream tf(text_path());
  std::stringstream ss;
  ss << tf.rdbuf();
  const auto halves = llama::split_halves(llama::split_chunks(ss.str()));
  std::vector<std::vector<int>> seqs;
  for (size_t i = 0; i < 8; ++i) seqs.push_back(llama::chunk_tokens(tok, halves.calibration[i], 512));
  QatOptions opt;
  opt.steps = kSanitized ? 1 : 3;
  opt.batch_tokens = 256;
  model.train(seqs, &teacher, opt);
  const std::string out = temp_path("stories_q4_0.gguf");
  llama::write_model_gguf(out, source, export_tensors(model), Type::Q4_0);
  const auto file = io::GgufFile::open(out);
  CHECK(file.tensor("blk.2.ffn_down.weight").type == Type::F16);
  CHECK(file.tensor("output.weight").type == Type::Q8_0);
  CHECK(file.tensor("token_embd.weight").type == Type::Q4_0);
  CHECK(file.tensor("blk.2.ffn_up.weight").type == Type::Q4_0);
  CHECK(file.tensor("blk.2.ffn_norm.weight").type == Type::F32);
  CHECK(file.get_string("tokenizer.ggml.model", "") == "llama");  // the source's metadata kept
  const llama::Weights w = llama::load_weights(file, 512);
  require_same_model(model, w);
  CHECK(logit_gap(w, model.effective(), seqs[0]) <= kLogitBound);
  CHECK(logit_gap(w, model.effective(), seqs[1]) <= kLogitBound);
  std::remove(out.c_str());
}
