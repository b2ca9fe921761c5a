// test_quantize_tool.cpp: lowbit-quantize's pipeline (examples/lowbit_quantize/quantize.hpp) on a
// small random llama whose shapes exercise the block fallbacks, and on stories260K: the output
// reloads with io::GgufFile, its tensors have llama.cpp's per-target types and decode to what the
// pipeline measured (rtn: byte-identical to formats' plain rounding), --bpw stays within budget in
// exact bytes, and every rejected input throws lowbit::Error and leaves no output file.
#include "../../examples/llama/engine.hpp"
#include "../../examples/llama/export.hpp"
#include "../../examples/llama/gguf_model.hpp"
#include "../../examples/llama/model.hpp"
#include "../../examples/llama/rotate.hpp"
#include "../../examples/llama/tokenizer.hpp"
#include "../../examples/lowbit_quantize/quantize.hpp"
#include "../support.hpp"
#include "tiny_llama.hpp"

#include <lowbit/formats/format.hpp>
#include <lowbit/io/gguf.hpp>
#include <lowbit/ptq/calibration.hpp>
#include <lowbit/ptq/format_result.hpp>
#include <lowbit/ptq/seeded_random.hpp>

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace {

using lowbit::Index;
using lowbit::MatrixXfR;
using lowbit::formats::Type;
using lowbit::io::Value;

using lowbit::test::shared;
bool exists(const std::string& path) { return bool(std::ifstream(path)); }
uint64_t file_size(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  return f ? uint64_t(f.tellg()) : 0;
}

// A SentencePiece-style vocabulary of 64 pieces: <unk> <s> </s>, "▁", a..z, "▁a".."▁z", ".", ",",
// "!", "?", and padding pieces; a calibration text of letters, spaces and punctuation tokenizes
// into about one token per character.
std::vector<std::string> pieces() {
  std::vector<std::string> p = {"<unk>", "<s>", "</s>", "\xe2\x96\x81"};
  for (char ch = 'a'; ch <= 'z'; ++ch) p.push_back(std::string(1, ch));
  for (char ch = 'a'; ch <= 'z'; ++ch) p.push_back("\xe2\x96\x81" + std::string(1, ch));
  for (const char* s : {".", ",", "!", "?"}) p.push_back(s);
  while (p.size() < 64) p.push_back("<pad" + std::to_string(p.size()) + ">");
  return p;
}

lowbit::io::Metadata tiny_metadata(const llama::Config& c) {
  std::vector<Value> tokens, scores, types;
  const auto p = pieces();
  for (size_t i = 0; i < p.size(); ++i) {
    tokens.push_back(Value::of_string(p[i]));
    scores.push_back(Value::of_float32(-float(i)));
    types.push_back(Value::of_int32(i < 3 ? 3 : 1));
  }
  lowbit::io::Metadata m = tiny::metadata(c);
  m.insert(m.end(), {{"tokenizer.ggml.model", Value::of_string("llama")},
                     {"tokenizer.ggml.tokens", Value::of_array(lowbit::io::ValueType::String, tokens)},
                     {"tokenizer.ggml.scores", Value::of_array(lowbit::io::ValueType::Float32, scores)},
                     {"tokenizer.ggml.token_type", Value::of_array(lowbit::io::ValueType::Int32, types)},
                     {"tokenizer.ggml.bos_token_id", Value::of_uint32(1)},
                     {"tokenizer.ggml.eos_token_id", Value::of_uint32(2)}});
  return m;
}

// A random llama: dim 64 (rows of the attention and FFN-in Linears fit only 32-weight blocks),
// FFN 256 (ffn_down's rows fit the 256-weight K-quant blocks), 4 query / 2 KV heads of 16, vocab
// 64, 2 blocks, untied head; gains around 1.
llama::Weights tiny_model(uint64_t seed) {
  lowbit::ptq::SeededRandom rng(seed);
  const auto mat = [&](Index r, Index c, double sd) {
    MatrixXfR m(r, c);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = float(sd * rng.gaussian());
    return m;
  };
  const auto gain = [&](Index n) {
    Eigen::VectorXf v(n);
    for (Index i = 0; i < n; ++i) v(i) = float(1.0 + 0.2 * rng.gaussian());
    return v;
  };
  llama::Weights w;
  auto& c = w.config;
  c.dim = 64;
  c.hidden_dim = 256;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 64;
  c.context_length = 128;
  c.rope_dim = 16;
  c.rms_eps = 1e-5f;
  w.token_embd = mat(64, 64, 0.8);
  w.tied_output = false;
  w.output = mat(64, 64, 0.3);
  w.output_norm = gain(64);
  for (int l = 0; l < 2; ++l) {
    llama::LayerWeights L;
    L.wq = mat(64, 64, 0.125);
    L.wk = mat(32, 64, 0.125);
    L.wv = mat(32, 64, 0.125);
    L.wo = mat(64, 64, 0.125);
    L.w_gate = mat(256, 64, 0.125);
    L.w_down = mat(64, 256, 0.0625);
    L.w_up = mat(256, 64, 0.125);
    L.attn_norm = gain(64);
    L.ffn_norm = gain(64);
    w.layers.push_back(L);
  }
  return w;
}

// `chunks` blank-line chunks of random lower-case words.
std::string random_text(int chunks, int words_per_chunk, uint64_t seed) {
  lowbit::ptq::SeededRandom rng(seed);
  std::string s;
  for (int k = 0; k < chunks; ++k) {
    for (int i = 0; i < words_per_chunk; ++i) {
      const int len = 2 + int(rng.uniform() * 6);
      for (int j = 0; j < len; ++j) s += char('a' + int(rng.uniform() * 26) % 26);
      s += i + 1 == words_per_chunk ? ".\n" : (rng.uniform() < 0.1 ? ", " : " ");
    }
    s += "\n";
  }
  return s;
}

struct Fixture {
  // Per process: ctest runs the test cases of this file at the same time.
  std::string model = "test_quantize_tool_model_" + std::to_string(getpid()) + ".gguf";
  std::string calib = "test_quantize_tool_calib_" + std::to_string(getpid()) + ".txt";
  llama::Weights w = tiny_model(7);
  Fixture() {
    llama::write_model(model, w, tiny_metadata(w.config), {});
    std::ofstream(calib) << random_text(80, 40, 3);
  }
  ~Fixture() {
    std::remove(model.c_str());
    std::remove(calib.c_str());
  }
  lbq::Options options(const std::string& out) const {
    lbq::Options o;
    o.model = model;
    o.calib = calib;
    o.out = out;
    o.threads = 1;
    o.context = 128;
    o.fisher_tokens = 2048;
    return o;
  }
};

const MatrixXfR& linear(const llama::LayerWeights& L, const std::string& name) {
  static const std::map<std::string, int> k = {{"attn_q", 0}, {"attn_k", 1}, {"attn_v", 2},
                                               {"attn_output", 3}, {"ffn_gate", 4},
                                               {"ffn_down", 5}, {"ffn_up", 6}};
  return llama::linear_weight(L, k.at(name));
}

const lbq::TensorReport& entry(const lbq::RunReport& r, const std::string& name) {
  for (const auto& t : r.tensors)
    if (t.name == name) return t;
  FAIL("no report entry for " << name);
  return r.tensors.front();
}

MatrixXfR decoded(const lowbit::io::GgufFile& f, const std::string& name) {
  const auto& t = f.tensor(name);
  return lowbit::formats::decode_matrix(t.type, f.tensor_data(t), t.rows(), t.cols());
}

// Bytes of the quantizable tensors (block Linears, embedding, head) as the file stores them.
uint64_t quantizable_bytes(const lowbit::io::GgufFile& f) {
  uint64_t n = 0;
  for (const auto& t : f.tensors())
    if (llama::is_quantizable(llama::role_of(t.name))) n += t.n_bytes;
  return n;
}

// The tool must fail before writing anything: no output, no temporary left behind.
void check_rejected(const lbq::Options& o, const std::string& why) {
  INFO(why);
  if (o.out.find(o.model) == std::string::npos) std::remove(o.out.c_str());
  CHECK_THROWS_AS(lbq::Quantizer(o).run(), lowbit::Error);
  if (o.out.find(o.model) == std::string::npos) CHECK_FALSE(exists(o.out));
  CHECK_FALSE(exists(o.out + ".tmp"));
}

}  // namespace

TEST_CASE("lowbit-quantize: --type Q4_K on a small llama: llama.cpp's types, fallbacks named, "
          "tensors decode to what the pipeline measured") {
  Fixture fx;
  const std::string out = "test_quantize_tool_q4k.gguf";
  lbq::Options o = fx.options(out);
  o.type = "Q4_K";
  const lbq::RunReport r = lbq::Quantizer(o).run();
  REQUIRE(exists(out));
  CHECK_FALSE(exists(out + ".tmp"));
  const auto f = lowbit::io::GgufFile::open(out);
  CHECK(r.file_bytes == file_size(out));
  CHECK(f.get_string("general.name", "") == "synthetic");  // the source's metadata is kept
  CHECK(f.get_string("lowbit.quantize.method", "") == "gptq");
  CHECK(f.get_int("general.file_type", -1) == int64_t(lowbit::io::file_type_for(Type::Q4_K)));
  // Rows of 64 fit no 256-weight block: Q4_K → Q5_0 (llama.cpp's fallback); ffn_down (rows of 256)
  // is Q4_K; the untied embedding follows the target (→ Q5_0); the head's rows are not whole
  // Q6_K blocks → Q8_0 (llama.cpp's head rule); norms F32.
  std::map<std::string, Type> want = {{"token_embd.weight", Type::Q5_0},
                                      {"output.weight", Type::Q8_0},
                                      {"output_norm.weight", Type::F32}};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up"})
      want[p + n + ".weight"] = Type::Q5_0;
    want[p + "ffn_down.weight"] = Type::Q4_K;
    want[p + "attn_norm.weight"] = Type::F32;
    want[p + "ffn_norm.weight"] = Type::F32;
  }
  REQUIRE(f.tensors().size() == want.size());
  for (const auto& [name, type] : want) {
    INFO(name);
    CHECK(f.tensor(name).type == type);
    CHECK(entry(r, name).type == lowbit::formats::to_string(type));
  }
  // Every fallback is named: 6 Linears per block and the embedding (Q4_K → Q5_0); the head is
  // Q8_0 by the head rule itself, not a fallback.
  CHECK(r.fallbacks.size() == 2 * 6 + 1);
  size_t embd_fallbacks = 0;
  for (const auto& s : r.fallbacks) embd_fallbacks += s.rfind("token_embd.weight: Q4_K -> Q5_0", 0) == 0;
  CHECK(embd_fallbacks == 1);
  // The norms are the source's; the engine loads the file and its logits are finite.
  const llama::Weights back = llama::load_weights(f);
  CHECK(back.layers[1].ffn_norm == fx.w.layers[1].ffn_norm);
  CHECK(llama::Model(back).forward({1, 5, 9, 12, 30}).allFinite());
  // Block 0's q/k/v read the RMSNorm of the stored (decoded) embedding rows of the calibration
  // tokens (sequential calibration): their relative output error recomputed here from the file's
  // bytes equals the one the pipeline measured and reported.
  const auto tok = llama::Tokenizer::from_gguf(f);
  const auto text = lbq::detail::read_calibration(fx.calib, tok, o.context, 1L << 40, 1024, 0, "");
  CHECK(r.calib_tokens == text.fit_tokens);
  CHECK(f.get_int("lowbit.quantize.calibration_tokens", -1) == text.fit_tokens);
  const MatrixXfR E = decoded(f, "token_embd.weight");
  MatrixXfR X(text.fit_tokens, 64);
  Index i = 0;
  for (const auto& s : text.fit)
    for (int t : s) X.row(i++) = E.row(t);
  lowbit::ptq::Calibration cal(64);
  cal.add(llama::rms_norm_rows(X, fx.w.layers[0].attn_norm, fx.w.config.rms_eps));
  for (const char* n : {"attn_q", "attn_k", "attn_v"}) {
    const std::string name = std::string("blk.0.") + n + ".weight";
    INFO(name);
    const double e = lowbit::ptq::relative_output_error(linear(fx.w.layers[0], n), decoded(f, name), cal);
    CHECK(e == Approx(entry(r, name).rel_error).epsilon(1e-4));
    CHECK(e < 0.05);  // 5-bit codes: about 1e-3
  }
  // The same target with the formats' plain rounding: byte-identical to formats::quantize_matrix
  // of the source weights, and a larger summed output error than GPTQ's.
  const std::string out_rtn = "test_quantize_tool_q4k_rtn.gguf";
  o = fx.options(out_rtn);
  o.type = "Q4_K";
  o.method = "rtn";
  const lbq::RunReport rr = lbq::Quantizer(o).run();
  const auto g = lowbit::io::GgufFile::open(out_rtn);
  double e_gptq = 0, e_rtn = 0;
  for (int l = 0; l < 2; ++l)
    for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_down", "ffn_up"}) {
      const std::string name = "blk." + std::to_string(l) + "." + n + ".weight";
      INFO(name);
      const auto& t = g.tensor(name);
      const auto bytes = lowbit::formats::quantize_matrix(t.type, linear(fx.w.layers[size_t(l)], n));
      REQUIRE(bytes.size() == t.n_bytes);
      CHECK(std::equal(bytes.begin(), bytes.end(), g.tensor_data(t)));
      e_gptq += entry(r, name).rel_error;
      e_rtn += entry(rr, name).rel_error;
    }
  CHECK(e_gptq < 0.8 * e_rtn);
  std::remove(out.c_str());
  std::remove(out_rtn.c_str());
}

TEST_CASE("lowbit-quantize: the sequential stream runs the stored tensors as the engine runs the file") {
  // Every Linear's relative output error, recomputed from the file's bytes on the inputs the
  // engine gives them when it runs the written file (int8 activations on lowbit's block kernels,
  // or weight-only with float32), equals what the pipeline measured: block 1 reads block 0 as
  // stored, and inside a block each Linear reads the stored ones before it.
  Fixture fx;
  const std::string out = "test_quantize_tool_stream.gguf";
  std::map<std::string, double> reported[2];
  for (int mode = 0; mode < 2; ++mode) {
    lbq::Options o = fx.options(out);
    o.type = "Q4_K";
    o.calib_activations = mode == 0 ? "int8" : "float32";
    const lbq::RunReport r = lbq::Quantizer(o).run();
    CHECK(r.calibration == "sequential, " + o.calib_activations + " activations");
    const auto f = lowbit::io::GgufFile::open(out);
    CHECK(f.get_string("lowbit.quantize.calibration", "") == r.calibration);
    llama::GgufRunOptions run;
    run.context_length = o.context;
    run.activations = mode == 0 ? lowbit::ActivationQuant::int8 : lowbit::ActivationQuant::float32;
    llama::Model m = llama::load_model(f, run);
    std::map<std::string, lowbit::ptq::Calibration> inputs;  // "layer.first linear reading it"
    m.set_capture([&](int layer, const std::string& name, const MatrixXfR& x) {
      if (layer < 0) return;
      const std::string key = std::to_string(layer) + "." + name;
      inputs.emplace(key, lowbit::ptq::Calibration(x.cols())).first->second.add(x);
    });
    const auto tok = llama::Tokenizer::from_gguf(f);
    const auto text = lbq::detail::read_calibration(fx.calib, tok, o.context, 1L << 40, 1024, 0, "");
    for (const auto& s : text.fit) {
      m.reset();
      m.forward(s);
    }
    const std::map<std::string, std::string> reads = {
        {"attn_q", "attn_q"},           {"attn_k", "attn_q"},   {"attn_v", "attn_q"}, {"attn_output", "attn_output"},
        {"ffn_gate", "ffn_gate"}, {"ffn_up", "ffn_gate"}, {"ffn_down", "ffn_down"}};
    for (int l = 0; l < 2; ++l)
      for (const auto& [n, input] : reads) {
        const std::string name = "blk." + std::to_string(l) + "." + n + ".weight";
        INFO(name << " with " << o.calib_activations << " activations");
        const double e = lowbit::ptq::relative_output_error(linear(fx.w.layers[size_t(l)], n), decoded(f, name),
                                                            inputs.at(std::to_string(l) + "." + input));
        CHECK(e == Approx(entry(r, name).rel_error).epsilon(1e-5));
        reported[mode][name] = entry(r, name).rel_error;
      }
    std::remove(out.c_str());
  }
  // Block 0's q/k/v read the stored embedding either way; later inputs differ by the int8
  // rounding of the activations.
  CHECK(reported[0]["blk.0.attn_q.weight"] == reported[1]["blk.0.attn_q.weight"]);
  for (int l = 0; l < 2; ++l)
    for (const char* n : {"attn_output", "ffn_down"}) {
      const std::string name = "blk." + std::to_string(l) + "." + n + ".weight";
      INFO(name);
      CHECK(std::abs(reported[0][name] / reported[1][name] - 1) > 1e-4);
    }
}

TEST_CASE("lowbit-quantize: --keep and legacy targets: rules win, rows that fit no block fall back") {
  Fixture fx;
  const std::string out = "test_quantize_tool_keep.gguf";
  lbq::Options o = fx.options(out);
  o.type = "Q4_0";
  o.method = "gamma";
  o.keep = {"attn_v=Q8_0", "^output\\.weight$=F16", "blk\\.1\\.ffn_down=Q6_K"};
  const lbq::RunReport r = lbq::Quantizer(o).run();
  const auto f = lowbit::io::GgufFile::open(out);
  CHECK(f.tensor("blk.0.attn_v.weight").type == Type::Q8_0);
  CHECK(f.tensor("blk.1.attn_v.weight").type == Type::Q8_0);
  CHECK(f.tensor("output.weight").type == Type::F16);
  CHECK(f.tensor("blk.1.ffn_down.weight").type == Type::Q6_K);  // rows of 256 fit Q6_K
  CHECK(f.tensor("blk.0.ffn_down.weight").type == Type::Q4_0);
  CHECK(f.tensor("blk.0.attn_q.weight").type == Type::Q4_0);
  CHECK(f.tensor("token_embd.weight").type == Type::Q4_0);
  CHECK(r.fallbacks.empty());
  CHECK(entry(r, "output.weight").rule.find("--keep") != std::string::npos);
  std::remove(out.c_str());
  // A --keep type whose block the rows do not fit falls back (Q6_K → Q8_0 for rows of 64).
  o.keep = {"attn_q=Q6_K"};
  const lbq::RunReport r2 = lbq::Quantizer(o).run();
  CHECK(lowbit::io::GgufFile::open(out).tensor("blk.0.attn_q.weight").type == Type::Q8_0);
  CHECK(r2.fallbacks.size() == 3);  // and the head: Q6_K -> Q8_0 (a Q4_0 target's head rule)
  std::remove(out.c_str());
}

TEST_CASE("lowbit-quantize: --bpw never exceeds the budget counted from the exact bytes written") {
  Fixture fx;
  const std::string out = "test_quantize_tool_bpw.gguf";
  // The bytes of uniform Q4_0 (the budget of --bpw Q4_0), from an independent uniform run.
  lbq::Options o = fx.options(out);
  o.type = "Q4_0";
  o.method = "rtn";
  lbq::Quantizer(o).run();
  const uint64_t q4_0_bytes = quantizable_bytes(lowbit::io::GgufFile::open(out));
  uint64_t weights = 0;
  const auto src = lowbit::io::GgufFile::open(fx.model);
  for (const auto& t : src.tensors())
    if (llama::is_quantizable(llama::role_of(t.name))) weights += t.n_elements;
  std::remove(out.c_str());
  for (const std::string bpw : {"Q4_0", "4.2", "5.25", "8.5"}) {
    for (const std::string alloc : {"measured", "closed-form"}) {
      INFO("--bpw " << bpw << " --allocator " << alloc);
      o = fx.options(out);
      o.bpw = bpw;
      o.allocator = alloc;
      o.types = {"Q2_K", "Q3_K", "Q4_0", "Q4_K", "Q5_0", "Q6_K", "Q8_0"};
      const lbq::RunReport r = lbq::Quantizer(o).run();
      const auto f = lowbit::io::GgufFile::open(out);
      const uint64_t budget = bpw == "Q4_0" ? q4_0_bytes : uint64_t(std::stod(bpw) * double(weights) / 8.0);
      CHECK(r.budget_bytes == budget);
      CHECK(quantizable_bytes(f) == r.quantized_bytes);
      CHECK(r.quantized_bytes <= budget);
      CHECK(r.quantized_weights == weights);
      CHECK(r.file_bytes == file_size(out));
      // Every quantizable tensor is in one of --types (or its fallback for its rows).
      for (const auto& t : f.tensors()) {
        if (!llama::is_quantizable(llama::role_of(t.name))) {
          CHECK(t.type == Type::F32);
          continue;
        }
        bool allowed = false;
        for (const auto& name : o.types)
          allowed |= llama::fitting_type(*lowbit::formats::parse_type(name), t.cols()) == t.type;
        CHECK(allowed);
      }
      if (alloc == "measured") CHECK(r.quantized_bytes >= budget * 9 / 10);  // the budget is used
      CHECK(llama::Model(llama::load_weights(f)).forward({1, 4, 7}).allFinite());
      std::remove(out.c_str());
    }
  }
}

TEST_CASE("lowbit-quantize: rejected inputs throw lowbit::Error and leave no output file") {
  Fixture fx;
  const std::string out = "test_quantize_tool_rejected.gguf";
  lbq::Options o = fx.options(out);
  o.type = "Q4_0";
  // Not a GGUF at all; a GGUF that is not a llama (no llama tensors); an unknown architecture.
  o.model = fx.calib;
  check_rejected(o, "a text file as --model");
  const std::string bad = "test_quantize_tool_bad.gguf";
  {
    lowbit::io::TensorData t;
    t.name = "weights";
    t.ne = {4};
    t.type = Type::F32;
    t.bytes.assign(16, 0);
    lowbit::io::write_gguf(bad, {{"general.architecture", Value::of_string("bert")}}, {t});
  }
  o.model = bad;
  check_rejected(o, "a bert GGUF");
  {
    auto meta = tiny_metadata(fx.w.config);
    auto tensors = llama::gguf_tensors(fx.w);
    tensors.erase(tensors.begin() + 5);  // one Linear missing
    lowbit::io::write_gguf(bad, meta, tensors);
  }
  check_rejected(o, "a llama GGUF with a missing tensor");
  // An input tensor of a type lowbit cannot decode (IQ2_XS).
  {
    std::vector<lowbit::io::TensorData> data;
    for (const auto& t : llama::gguf_tensors(fx.w)) {
      lowbit::io::TensorData d;
      d.name = t.name;
      d.ne = t.ne;
      d.type = Type::F32;
      d.bytes.resize(t.data.size() * 4);
      std::memcpy(d.bytes.data(), t.data.data(), d.bytes.size());
      if (t.name == "blk.1.ffn_down.weight") {
        d.type = Type::IQ2_XS;
        d.bytes.assign(size_t(64 * lowbit::formats::row_bytes(Type::IQ2_XS, 256)), 0);
      }
      data.push_back(std::move(d));
    }
    lowbit::io::write_gguf(bad, tiny_metadata(fx.w.config), data);
  }
  try {
    lbq::Quantizer(o).run();
    FAIL("an IQ2_XS input was accepted");
  } catch (const lowbit::Error& e) {
    CHECK(std::string(e.what()).find("IQ2_XS") != std::string::npos);
  }
  CHECK_FALSE(exists(out));
  std::remove(bad.c_str());
  o = fx.options(out);
  // A budget below the smallest allowed type; bad options.
  o.bpw = "1.5";
  check_rejected(o, "--bpw below Q2_K");
  o.bpw = "4.5";
  o.types = {"Q4_0", "Q8_0"};
  o.bpw = "4.0";
  check_rejected(o, "--bpw 4.0 with only Q4_0 and Q8_0");
  o.bpw = "x4";
  check_rejected(o, "--bpw not a number");
  o = fx.options(out);
  o.type = "IQ2_XS";
  check_rejected(o, "--type IQ2_XS (no codec)");
  o.type = "Q4_0";
  o.method = "hqq";
  check_rejected(o, "--method hqq");
  o.method = "gptq";
  o.calib_activations = "int4";
  check_rejected(o, "--calib-activations int4");
  o.calib_activations = "int8";
  o.keep = {"attn_q"};
  check_rejected(o, "--keep without =TYPE");
  o.keep = {"attn_q=Q9_9"};
  check_rejected(o, "--keep with an unknown type");
  o.keep.clear();
  // The output path equal to the input (the input stays as it was); an unwritable folder.
  const uint64_t size = file_size(fx.model);
  o.out = fx.model;
  check_rejected(o, "--out equal to --model");
  CHECK(file_size(fx.model) == size);
  o.out = "./" + fx.model;
  check_rejected(o, "--out the same file by another name");
  CHECK(file_size(fx.model) == size);
  o.out = "/nonexistent-folder/out.gguf";
  check_rejected(o, "--out in a folder that does not exist");
  o.out = out;
  // A calibration text too short for GPTQ's rule (4 x 256 = 1024 tokens): the message says so.
  const std::string short_text = "test_quantize_tool_short.txt";
  std::ofstream(short_text) << random_text(8, 20, 5);
  o.calib = short_text;
  try {
    lbq::Quantizer(o).run();
    FAIL("a short calibration text was accepted");
  } catch (const lowbit::Error& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find("needs 1024") != std::string::npos);
  }
  CHECK_FALSE(exists(out));
  o.calib = "no-such-calibration.txt";
  check_rejected(o, "a missing calibration text");
  std::remove(short_text.c_str());
}

TEST_CASE("lowbit-quantize: stories260K in Q4_0: llama.cpp's types, rtn bytes are formats' rounding, "
          "GPTQ measures lower errors, --bpw Q4_0 fits the Q4_0 file's bytes") {
  const std::string model = shared("models/stories260K.gguf");
  const std::string text = shared("data/tinystories_val.txt");
  if (!exists(model) || !exists(text)) {
    WARN("SKIPPED: " << model << " or " << text << " is absent (needs ../shared beside the project)");
    return;
  }
  const auto src = lowbit::io::GgufFile::open(model);
  const llama::Weights w = llama::load_weights(src);
  lbq::Options o;
  o.model = model;
  o.calib = text;
  o.threads = 1;
  o.calib_tokens = 6000;
  o.fisher_tokens = 1024;
  o.measure_rows = 128;
  o.type = "Q4_0";
  std::map<std::string, lbq::RunReport> runs;
  for (const std::string method : {"rtn", "gptq"}) {
    o.method = method;
    o.out = "test_quantize_tool_stories_" + method + ".gguf";
    runs[method] = lbq::Quantizer(o).run();
    const auto f = lowbit::io::GgufFile::open(o.out);
    CHECK(f.tensors().size() == src.tensors().size());
    CHECK(f.tensor("token_embd.weight").type == Type::Q4_0);
    CHECK(f.tensor("output.weight").type == Type::Q8_0);  // llama.cpp's head rule (rows of 64)
    CHECK(f.get_string("tokenizer.ggml.model", "") == "llama");
    for (int l = 0; l < w.config.n_layers; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up"})
        CHECK(f.tensor(p + n + ".weight").type == Type::Q4_0);
      CHECK(f.tensor(p + "ffn_down.weight").type == Type::F16);  // rows of 172 fit no block
      CHECK(f.tensor(p + "attn_norm.weight").type == Type::F32);
      if (method == "rtn") {
        for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_down", "ffn_up"}) {
          const auto& t = f.tensor(p + n + ".weight");
          const auto bytes = lowbit::formats::quantize_matrix(t.type, linear(w.layers[size_t(l)], n));
          REQUIRE(bytes.size() == t.n_bytes);
          CHECK(std::equal(bytes.begin(), bytes.end(), f.tensor_data(t)));
        }
      }
    }
    CHECK(runs[method].fallbacks.size() == size_t(w.config.n_layers) + 1);  // ffn_down ×5, the head
  }
  double e_rtn = 0, e_gptq = 0;
  for (const auto& t : runs["gptq"].tensors)
    if (t.name.rfind("blk.", 0) == 0 && t.type == "Q4_0") {
      e_gptq += t.rel_error;
      e_rtn += entry(runs["rtn"], t.name).rel_error;
    }
  CHECK(e_gptq < 0.8 * e_rtn);
  // --bpw Q4_0: the budget is the Q4_0 file's quantizable bytes; the allocation stays within it.
  const uint64_t q4_0 = quantizable_bytes(lowbit::io::GgufFile::open("test_quantize_tool_stories_rtn.gguf"));
  o.type.clear();
  o.bpw = "Q4_0";
  o.method = "gptq";
  o.out = "test_quantize_tool_stories_bpw.gguf";
  const lbq::RunReport rb = lbq::Quantizer(o).run();
  const auto fb = lowbit::io::GgufFile::open(o.out);
  CHECK(rb.budget_bytes == q4_0);
  CHECK(quantizable_bytes(fb) == rb.quantized_bytes);
  CHECK(rb.quantized_bytes <= q4_0);
  CHECK(fb.file_size() <= lowbit::io::GgufFile::open("test_quantize_tool_stories_rtn.gguf").file_size() + 4096);
  for (const char* p : {"test_quantize_tool_stories_rtn.gguf", "test_quantize_tool_stories_gptq.gguf",
                        "test_quantize_tool_stories_bpw.gguf"})
    std::remove(p);
}

TEST_CASE("lowbit-quantize: --rotate chooses on the held-out tail of the calibration half and "
          "records the choice, and the chosen file scores what the choice measured") {
  Fixture fx;
  const std::string out = "test_quantize_tool_rotate.gguf";
  lbq::Options o = fx.options(out);
  o.type = "Q4_0";
  o.rotate = true;
  o.val_predictions = 1000;
  const lbq::RunReport r = lbq::Quantizer(o).run();
  REQUIRE(r.candidates.size() == 2);
  CHECK(r.candidates[0].transform == "none");
  CHECK(r.candidates[1].transform.rfind("fold+hadamard", 0) == 0);  // dim 64
  size_t chosen = 0, n_chosen = 0;
  for (size_t k = 0; k < 2; ++k)
    if (r.candidates[k].chosen) {
      chosen = k;
      ++n_chosen;
    }
  REQUIRE(n_chosen == 1);
  CHECK(r.candidates[chosen].val_ppl <= r.candidates[1 - chosen].val_ppl);
  CHECK(r.rotation == r.candidates[chosen].transform);
  CHECK_FALSE(exists(out + ".candidate-0"));
  CHECK_FALSE(exists(out + ".candidate-1"));
  const auto f = lowbit::io::GgufFile::open(out);
  CHECK(f.get_string("lowbit.quantize.rotation", "") == r.rotation);
  CHECK(f.at("lowbit.quantize.rotation_candidates").as_array().size() == 2);
  // The validation tail: the last chunks of the calibration half (never the evaluation half),
  // disjoint from the chunks calibration used. The written file, run by the engine on it (int8
  // activations on the block kernels, as the calibration stream), gives the perplexity the choice
  // was made on.
  const auto tok = llama::Tokenizer::from_gguf(f);
  const auto text = lbq::detail::read_calibration(fx.calib, tok, o.context, 1L << 40, 1024, 1000, "");
  CHECK(text.validation_predictions == r.candidates[chosen].val_predictions);
  CHECK(text.validation_predictions >= 1000);
  llama::GgufRunOptions run;
  run.context_length = o.context;
  llama::Model m = llama::load_model(f, run);
  double nll = 0;
  long n = 0;
  for (const auto& s : text.validation) {
    m.reset();
    const MatrixXfR logits = m.forward(s);
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const auto row = logits.row(Index(i));
      const double mx = row.maxCoeff();
      double sum = 0;
      for (Index j = 0; j < row.size(); ++j) sum += std::exp(double(row(j)) - mx);
      nll += mx + std::log(sum) - double(row(s[i + 1]));
      ++n;
    }
  }
  CHECK(n == text.validation_predictions);
  CHECK(std::exp(nll / double(n)) == Approx(r.candidates[chosen].val_ppl).epsilon(1e-4));
  std::remove(out.c_str());
}
