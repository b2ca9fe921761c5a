// test_gguf_writer.cpp: the GGUF v3 writer: mixed-type round trips, metadata kept exactly and in
// order, alignment, file type keys, streaming, temporary-then-rename, and every rejected input.
#include <lowbit/io/gguf.hpp>

#include <catch2/catch.hpp>

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>

namespace fs = std::filesystem;
using lowbit::io::FileType;
using lowbit::io::GgufFile;
using lowbit::io::GgufWriter;
using lowbit::io::Metadata;
using lowbit::io::TensorData;
using lowbit::io::TensorSpec;
using lowbit::io::Value;
using lowbit::io::ValueType;
using lowbit::io::WriteOptions;
using Type = lowbit::formats::Type;

namespace {

/// A fresh folder under the system temporary folder, removed with everything in it.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "lowbit-io-XXXXXX").string();
    REQUIRE(::mkdtemp(t.data()) != nullptr);
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
  /// Names of the entries in the folder.
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void put_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

/// Checks that `f` throws lowbit::Error whose message holds every string of `parts`.
template <class F>
void throws_with(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    FAIL("expected lowbit::Error");
  } catch (const lowbit::Error& e) {
    INFO(e.what());
    for (const auto& p : parts) CHECK(std::string(e.what()).find(p) != std::string::npos);
  }
}

/// Random bytes standing for `n` bytes of blocks; the writer and reader only move bytes, so any
/// bytes are valid tensor data.
std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = uint8_t(rng());
  return b;
}

/// A tensor of a mixed-type file and its size in bytes, computed here by hand from ggml's block
/// geometry (elements per block, bytes per block), independently of lowbit's type table.
struct Case {
  const char* name;
  std::vector<uint64_t> ne;
  Type type;
  uint64_t bytes;
};

std::vector<Case> mixed_cases() {
  return {
      {"token_embd.weight", {64, 8}, Type::Q8_0, 8 * 2 * 34},
      {"blk.0.attn_norm.weight", {13}, Type::F32, 52},
      {"blk.0.attn_q.weight", {256, 4}, Type::Q4_K, 4 * 144},
      {"blk.0.attn_k.weight", {256, 2}, Type::Q2_K, 2 * 84},
      {"blk.0.attn_v.weight", {256, 2}, Type::Q3_K, 2 * 110},
      {"blk.0.attn_output.weight", {512, 2}, Type::Q5_K, 2 * 2 * 176},
      {"blk.0.ffn_gate.weight", {256, 3}, Type::Q6_K, 3 * 210},
      {"blk.0.ffn_up.weight", {32, 5}, Type::Q4_1, 5 * 20},
      {"blk.0.ffn_down.weight", {172, 3}, Type::F16, 172 * 3 * 2},
      {"q5_0", {64, 2}, Type::Q5_0, 2 * 2 * 22},
      {"q5_1", {32, 3}, Type::Q5_1, 3 * 24},
      {"q4_0", {32, 1}, Type::Q4_0, 18},
      {"bf16", {7}, Type::BF16, 14},
      {"iq4_nl", {32, 2}, Type::IQ4_NL, 2 * 18},
      {"iq4_xs", {256}, Type::IQ4_XS, 136},
      {"iq2_xs", {256}, Type::IQ2_XS, 74},
      {"iq1_m", {256, 2}, Type::IQ1_M, 2 * 56},
      {"tq1_0", {256}, Type::TQ1_0, 54},
      {"tq2_0", {256}, Type::TQ2_0, 66},
      {"mxfp4", {32, 3}, Type::MXFP4, 3 * 17},
      {"q8_k", {256}, Type::Q8_K, 292},
      {"i8", {5}, Type::I8, 5},
      {"i16", {3}, Type::I16, 6},
      {"i32", {3}, Type::I32, 12},
      {"i64", {1}, Type::I64, 8},
      {"f64", {2, 2, 2}, Type::F64, 64},
      {"four_d", {32, 2, 2, 2}, Type::Q8_0, 8 * 34},
  };
}

std::vector<TensorData> mixed_tensors() {
  std::vector<TensorData> out;
  uint32_t seed = 1;
  for (const auto& c : mixed_cases())
    out.push_back(TensorData{{c.name, c.ne, c.type}, random_bytes(size_t(c.bytes), seed++)});
  return out;
}

std::vector<TensorSpec> specs(const std::vector<TensorData>& ts) {
  return std::vector<TensorSpec>(ts.begin(), ts.end());
}

/// Metadata of every value type, nested arrays and a tokenizer-sized string array.
Metadata all_types_metadata() {
  std::vector<Value> tokens, scores, types;
  for (int k = 0; k < 1000; ++k) {
    tokens.push_back(Value::of_string(k == 3 ? std::string("\xe2\x96\x81the") : "tok" + std::to_string(k)));
    scores.push_back(Value::of_float32(-0.25f * float(k)));
    types.push_back(Value::of_int32(k % 6));
  }
  const float qnan = std::numeric_limits<float>::quiet_NaN();
  std::vector<Value> nested = {
      Value::of_array(ValueType::Int32, {Value::of_int32(1), Value::of_int32(-2)}),
      Value::of_array(ValueType::Int32, {}),
      Value::of_array(ValueType::Int32, {Value::of_int32(std::numeric_limits<int32_t>::min())})};
  std::vector<Value> deep = {Value::of_array(
      ValueType::Array, {Value::of_array(ValueType::String, {Value::of_string("x"), Value::of_string("")})})};
  return {
      {"general.architecture", Value::of_string("llama")},
      {"general.file_type", Value::of_uint32(0)},  // replaced in place by the writer
      {"general.name", Value::of_string("")},
      {"u8", Value::of_uint8(255)},
      {"i8", Value::of_int8(-128)},
      {"u16", Value::of_uint16(65535)},
      {"i16", Value::of_int16(-32768)},
      {"u32", Value::of_uint32(4294967295u)},
      {"i32", Value::of_int32(std::numeric_limits<int32_t>::min())},
      {"u64", Value::of_uint64(std::numeric_limits<uint64_t>::max())},
      {"i64", Value::of_int64(std::numeric_limits<int64_t>::min())},
      {"f32", Value::of_float32(1e-5f)},
      {"f32.nan", Value::of_float32(qnan)},
      {"f32.neg_zero", Value::of_float32(-0.0f)},
      {"f32.denormal", Value::of_float32(std::numeric_limits<float>::denorm_min())},
      {"f64", Value::of_float64(3.141592653589793)},
      {"f64.inf", Value::of_float64(-std::numeric_limits<double>::infinity())},
      {"bool.true", Value::of_bool(true)},
      {"bool.false", Value::of_bool(false)},
      {"tokenizer.ggml.tokens", Value::of_array(ValueType::String, tokens)},
      {"tokenizer.ggml.scores", Value::of_array(ValueType::Float32, scores)},
      {"tokenizer.ggml.token_type", Value::of_array(ValueType::Int32, types)},
      {"nested", Value::of_array(ValueType::Array, nested)},
      {"deep", Value::of_array(ValueType::Array, deep)},
      {"empty.array", Value::of_array(ValueType::UInt64, {})},
      {"u8.array", Value::of_array(ValueType::UInt8, {Value::of_uint8(0), Value::of_uint8(200)})},
      {"bool.array", Value::of_array(ValueType::Bool, {Value::of_bool(true), Value::of_bool(false)})},
      {"z.last", Value::of_string("key order is file order, not sorted")},
  };
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/// Checks a reopened mixed-type file: tensor infos, exact bytes, ggml's sequential layout with
/// padding to `alignment`, zero padding bytes, and the file size.
void check_mixed(const GgufFile& f, const std::vector<uint8_t>& bytes, uint32_t alignment) {
  const auto cases = mixed_cases();
  const auto tensors = mixed_tensors();
  CHECK(f.version() == 3);
  CHECK(f.alignment() == alignment);
  CHECK(f.data_offset() % alignment == 0);
  REQUIRE(f.tensors().size() == cases.size());
  uint64_t offset = 0;
  for (size_t k = 0; k < cases.size(); ++k) {
    const auto& t = f.tensors()[k];
    INFO(t.name);
    CHECK(t.name == cases[k].name);
    CHECK(t.ne == cases[k].ne);
    CHECK(t.type == cases[k].type);
    CHECK(t.n_bytes == cases[k].bytes);
    CHECK(t.offset == offset);
    CHECK(t.offset % alignment == 0);
    const auto raw = f.raw(t);
    REQUIRE(raw.size == cases[k].bytes);
    CHECK(std::memcmp(raw.data, tensors[k].bytes.data(), size_t(raw.size)) == 0);
    CHECK(raw.data == f.tensor_data(t));
    CHECK(t.row_bytes() * uint64_t(t.rows()) == t.n_bytes);
    // Padding after the tensor is zero.
    const uint64_t end = f.data_offset() + t.offset + t.n_bytes;
    for (uint64_t p = end; p < f.data_offset() + align_up(t.offset + t.n_bytes, alignment); ++p)
      CHECK(bytes[size_t(p)] == 0);
    offset = align_up(offset + t.n_bytes, alignment);
  }
  CHECK(f.file_size() == f.data_offset() + offset);  // ggml pads the last tensor too
  CHECK(bytes.size() == f.file_size());
}

}  // namespace

TEST_CASE("gguf writer: a file of every tensor type round-trips byte for byte") {
  const auto tensors = mixed_tensors();
  for (uint32_t alignment : {32u, 64u, 1u, 256u}) {
    INFO("alignment " << alignment);
    WriteOptions o;
    o.alignment = alignment;
    o.file_type = uint32_t(FileType::MOSTLY_Q4_K_M);
    const auto bytes = lowbit::io::serialize_gguf({{"general.architecture", Value::of_string("llama")}},
                                                  tensors, o);
    const auto f = GgufFile::from_bytes(bytes.data(), bytes.size());
    check_mixed(f, bytes, alignment);
    const Value* a = f.find("general.alignment");
    if (alignment == 32) {
      CHECK(a == nullptr);  // the default is not stored
    } else {
      REQUIRE(a != nullptr);
      CHECK(a->type == ValueType::UInt32);
      CHECK(a->u == alignment);
    }
    // The same file through the streaming writer and through write_gguf, on disk.
    TempDir dir;
    {
      GgufWriter w(dir.file("stream.gguf"), {{"general.architecture", Value::of_string("llama")}},
                   specs(tensors), o);
      CHECK(w.file_size() == bytes.size());
      CHECK(w.data_offset() == f.data_offset());
      for (const auto& t : tensors) w.write_tensor(t.name, t.bytes);
      w.finish();
    }
    CHECK(file_bytes(dir.file("stream.gguf")) == bytes);
    lowbit::io::write_gguf(dir.file("oneshot.gguf"), {{"general.architecture", Value::of_string("llama")}},
                           tensors, o);
    CHECK(file_bytes(dir.file("oneshot.gguf")) == bytes);
    check_mixed(GgufFile::open(dir.file("oneshot.gguf")), bytes, alignment);
    CHECK(dir.entries() == std::vector<std::string>{"oneshot.gguf", "stream.gguf"});
  }
}

TEST_CASE("gguf writer: hand-made Q8_0 and Q4_0 blocks decode to their values after writing") {
  // Q8_0: d = 0.5 (fp16 0x3800), codes -16..15; Q4_0: d = 2 (0x4000), x[j] = 2 (j - 8) in the low
  // nibbles and x[j + 16] = 2 (7 - j) in the high ones.
  std::vector<uint8_t> q8 = {0x00, 0x38}, q4 = {0x00, 0x40};
  std::vector<float> q8_want, q4_want(32);
  for (int k = 0; k < 32; ++k) {
    q8.push_back(uint8_t(int8_t(k - 16)));
    q8_want.push_back(0.5f * float(k - 16));
  }
  for (int j = 0; j < 16; ++j) {
    q4.push_back(uint8_t(j | ((15 - j) << 4)));
    q4_want[size_t(j)] = 2.0f * float(j - 8);
    q4_want[size_t(j + 16)] = 2.0f * float(7 - j);
  }
  const auto bytes = lowbit::io::serialize_gguf(
      {}, {TensorData{{"q8", {32}, Type::Q8_0}, q8}, TensorData{{"q4", {32}, Type::Q4_0}, q4}});
  const auto f = GgufFile::from_bytes(bytes.data(), bytes.size());
  const lowbit::MatrixXfR a = f.read("q8"), b = f.read("q4");
  REQUIRE(a.size() == 32);
  REQUIRE(b.size() == 32);
  for (int k = 0; k < 32; ++k) {
    CHECK(a(0, k) == q8_want[size_t(k)]);
    CHECK(b(0, k) == q4_want[size_t(k)]);
  }
  CHECK(f.tensor("q8").bits_per_weight() == 8.5);
  CHECK(f.tensor("q4").bits_per_weight() == 4.5);
}

TEST_CASE("gguf writer: metadata of every type is kept exactly and in order") {
  const Metadata meta = all_types_metadata();
  WriteOptions o;
  o.file_type = uint32_t(FileType::MOSTLY_Q6_K);
  const auto bytes = lowbit::io::serialize_gguf(meta, mixed_tensors(), o);
  const auto f = GgufFile::from_bytes(bytes.data(), bytes.size());
  const Metadata& got = f.metadata();
  // Every key in order; general.file_type replaced in place, quantization_version appended.
  REQUIRE(got.size() == meta.size() + 1);
  for (size_t k = 0; k < meta.size(); ++k) {
    INFO(meta[k].first);
    CHECK(got[k].first == meta[k].first);
    if (meta[k].first == "general.file_type") {
      CHECK(got[k].second == Value::of_uint32(18));
    } else {
      CHECK(got[k].second == meta[k].second);
    }
  }
  CHECK(got.back().first == "general.quantization_version");
  CHECK(got.back().second == Value::of_uint32(2));
  // Spot checks against the values written by hand, independently of operator==.
  CHECK(f.at("u64").u == std::numeric_limits<uint64_t>::max());
  CHECK(f.at("i64").i == std::numeric_limits<int64_t>::min());
  CHECK(f.at("i8").i == -128);
  CHECK(std::isnan(f.at("f32.nan").f));
  CHECK(std::signbit(f.at("f32.neg_zero").f));
  CHECK(f.at("f32.denormal").f == double(std::numeric_limits<float>::denorm_min()));
  CHECK(f.at("f32").f == double(1e-5f));
  CHECK(f.at("tokenizer.ggml.tokens").as_array()[3].as_string() == "\xe2\x96\x81the");
  CHECK(f.at("tokenizer.ggml.scores").as_array()[999].as_float() == -249.75);
  CHECK(f.at("deep").as_array()[0].as_array()[0].as_array()[1].as_string().empty());
  CHECK(f.at("nested").as_array()[2].as_array()[0].as_int() == std::numeric_limits<int32_t>::min());
  // Operator== is exact: bits of floats, types, element types.
  CHECK(Value::of_float32(0.0f) != Value::of_float32(-0.0f));
  CHECK(Value::of_uint32(1) != Value::of_uint64(1));
  CHECK(Value::of_array(ValueType::Int32, {}) != Value::of_array(ValueType::UInt32, {}));

  // Starting from a read file: writing its metadata and tensors again gives the same bytes.
  std::vector<TensorData> again;
  for (const auto& t : f.tensors()) {
    const auto raw = f.raw(t);
    again.push_back(TensorData{{t.name, t.ne, t.type}, {raw.data, raw.data + raw.size}});
  }
  CHECK(lowbit::io::serialize_gguf(lowbit::io::output_metadata(f), again, o) == bytes);
}

TEST_CASE("gguf writer: general.file_type, quantization_version and the split keys") {
  const auto tensors = mixed_tensors();
  SECTION("absent file type: guessed as llama.cpp's loader does (most tensors' type)") {
    const auto bytes = lowbit::io::serialize_gguf({}, tensors);
    const auto f = GgufFile::from_bytes(bytes.data(), bytes.size());
    CHECK(f.at("general.file_type") == Value::of_uint32(7));  // Q8_0: 2 tensors, others 1
    CHECK(f.at("general.quantization_version") == Value::of_uint32(2));
    REQUIRE(f.metadata().size() == 2);
    CHECK(f.metadata()[0].first == "general.quantization_version");
    CHECK(f.metadata()[1].first == "general.file_type");
  }
  SECTION("given file type, existing keys replaced in place") {
    WriteOptions o;
    o.file_type = 15;
    const auto bytes = lowbit::io::serialize_gguf(
        {{"general.quantization_version", Value::of_uint32(1)}, {"a", Value::of_bool(true)},
         {"general.file_type", Value::of_int32(1)}},
        tensors, o);
    const auto f = GgufFile::from_bytes(bytes.data(), bytes.size());
    REQUIRE(f.metadata().size() == 3);
    CHECK(f.metadata()[0].second == Value::of_uint32(2));
    CHECK(f.metadata()[2].first == "general.file_type");
    CHECK(f.metadata()[2].second == Value::of_uint32(15));
  }
  SECTION("guess_file_type and file_type_for follow llama.cpp's loader") {
    using lowbit::io::guess_file_type;
    CHECK(guess_file_type({}) == FileType::ALL_F32);
    CHECK(guess_file_type({{"a", Type::F32}, {"b", Type::Q4_K}, {"c", Type::Q4_K}}) ==
          FileType::MOSTLY_Q4_K_M);
    // A tie goes to the type reaching the count first in name order.
    CHECK(guess_file_type({{"b", Type::Q5_0}, {"a", Type::Q6_K}}) == FileType::MOSTLY_Q6_K);
    CHECK(lowbit::io::file_type_for(Type::Q3_K) == FileType::MOSTLY_Q3_K_M);
    CHECK(lowbit::io::file_type_for(Type::Q5_1) == FileType::MOSTLY_Q5_1);
    CHECK(uint32_t(lowbit::io::file_type_for(Type::Q8_0)) == 7);
    CHECK(uint32_t(lowbit::io::file_type_for(Type::BF16)) == 32);
    CHECK(lowbit::io::file_type_for(Type::Q8_1) == FileType::ALL_F32);
  }
  SECTION("the legacy F32 writer writes the metadata exactly as given") {
    const auto bytes = lowbit::io::serialize_gguf(
        {{"k", Value::of_uint8(1)}}, {lowbit::io::TensorF32{"x", {2}, {1.f, 2.f}}});
    const auto f = GgufFile::from_bytes(bytes.data(), bytes.size());
    REQUIRE(f.metadata().size() == 1);
    CHECK(f.find("general.file_type") == nullptr);
  }
  SECTION("output_metadata drops the split keys and keeps the rest in order") {
    const auto bytes = lowbit::io::serialize_gguf(
        {{"a", Value::of_uint8(1)}, {"split.no", Value::of_uint16(0)},
         {"split.count", Value::of_uint16(2)}, {"split.tensors.count", Value::of_int32(9)},
         {"b", Value::of_uint8(2)}},
        {lowbit::io::TensorF32{"x", {2}, {1.f, 2.f}}});
    const Metadata m = lowbit::io::output_metadata(GgufFile::from_bytes(bytes.data(), bytes.size()));
    REQUIRE(m.size() == 2);
    CHECK(m[0].first == "a");
    CHECK(m[1].first == "b");
  }
}

TEST_CASE("gguf writer: general.alignment in the metadata is honoured") {
  const auto tensors = mixed_tensors();
  const auto bytes = lowbit::io::serialize_gguf(
      {{"general.alignment", Value::of_uint32(128)}, {"x", Value::of_string("y")}}, tensors);
  const auto f = GgufFile::from_bytes(bytes.data(), bytes.size());
  CHECK(f.metadata()[0].first == "general.alignment");  // kept where it was, not duplicated
  CHECK(f.metadata().size() == 4);
  check_mixed(f, bytes, 128);
  WriteOptions same;
  same.alignment = 128;
  CHECK(lowbit::io::serialize_gguf({{"general.alignment", Value::of_uint32(128)}, {"x", Value::of_string("y")}},
                                   tensors, same) == bytes);
}

TEST_CASE("gguf writer: streaming tensor parts, exact byte counts, sizes reported") {
  TempDir dir;
  const auto tensors = mixed_tensors();
  const auto want = lowbit::io::serialize_gguf({}, tensors);
  GgufWriter w(dir.file("parts.gguf"), {}, specs(tensors));
  CHECK(w.file_size() == want.size());
  uint64_t sum = 0;
  for (const auto& c : mixed_cases()) sum += c.bytes;
  CHECK(w.tensor_bytes() == sum);
  CHECK(w.metadata().size() == 2);
  CHECK(w.alignment() == 32);
  REQUIRE(w.tensors().size() == tensors.size());
  CHECK(w.tensors()[2].bits_per_weight() == 4.5);  // Q4_K: 144 bytes per 256 weights
  CHECK(w.tensors()[6].bits_per_weight() == 6.5625);  // Q6_K: 210 bytes per 256
  CHECK(w.tensors()[5].bits_per_weight() == 5.5);  // Q5_K: 176 per 256
  CHECK(w.tensors()[3].bits_per_weight() == 2.625);  // Q2_K: 84 per 256
  // Nothing at the target until finish(); only the temporary exists.
  CHECK(!fs::exists(dir.file("parts.gguf")));
  CHECK(fs::exists(w.temp_path()));
  CHECK(w.temp_path().rfind(dir.file("parts.gguf.tmp-"), 0) == 0);
  for (const auto& t : tensors) {
    REQUIRE(w.next() != nullptr);
    CHECK(w.next()->name == t.name);
    // Row by row for tensors with several rows, whole otherwise.
    const uint64_t row = w.next()->row_bytes();
    for (uint64_t p = 0; p < t.bytes.size(); p += row) w.append(t.bytes.data() + p, row);
  }
  CHECK(w.next() == nullptr);
  const std::string temp = w.temp_path();
  w.finish();
  CHECK(!fs::exists(temp));
  CHECK(file_bytes(dir.file("parts.gguf")) == want);
  CHECK(dir.entries() == std::vector<std::string>{"parts.gguf"});
  CHECK_THROWS_AS(w.finish(), lowbit::Error);  // already finished
}

TEST_CASE("gguf writer: the produce callback writes one tensor at a time") {
  TempDir dir;
  const auto tensors = mixed_tensors();
  std::vector<size_t> order;
  lowbit::io::write_gguf(dir.file("cb.gguf"), {}, specs(tensors),
                         [&](size_t k, const lowbit::io::TensorInfo& t, uint8_t* out) {
                           order.push_back(k);
                           REQUIRE(t.n_bytes == tensors[k].bytes.size());
                           std::memcpy(out, tensors[k].bytes.data(), size_t(t.n_bytes));
                         });
  CHECK(order.size() == tensors.size());
  CHECK(file_bytes(dir.file("cb.gguf")) == lowbit::io::serialize_gguf({}, tensors));
  // A callback that throws leaves no file.
  CHECK_THROWS_AS(lowbit::io::write_gguf(dir.file("cb2.gguf"), {}, specs(tensors),
                                         [&](size_t k, const lowbit::io::TensorInfo&, uint8_t*) {
                                           if (k == 3) lowbit::detail::fail("stop at {}", k);
                                         }),
                  lowbit::Error);
  CHECK(dir.entries() == std::vector<std::string>{"cb.gguf"});
}

TEST_CASE("gguf writer: temporary then rename; failures leave no file and an old file untouched") {
  TempDir dir;
  const auto tensors = mixed_tensors();
  const std::string target = dir.file("model.gguf");
  const auto failing = [&](auto&& step) {
    put_file(target, "old contents");
    {
      GgufWriter w(target, {}, specs(tensors));
      w.write_tensor(tensors[0].name, tensors[0].bytes);
      CHECK(file_bytes(target) == std::vector<uint8_t>{'o', 'l', 'd', ' ', 'c', 'o', 'n', 't', 'e', 'n', 't', 's'});
      CHECK_THROWS_AS(step(w), lowbit::Error);
      CHECK(w.temp_path().empty());  // removed at the failure, not only at destruction
      CHECK_THROWS_AS(w.write_tensor(tensors[1].name, tensors[1].bytes), lowbit::Error);
    }
    CHECK(dir.entries() == std::vector<std::string>{"model.gguf"});
    CHECK(file_bytes(target).size() == 12);  // the old file, untouched
    fs::remove(target);
  };
  SECTION("a wrong byte count") {
    failing([&](GgufWriter& w) { w.write_tensor(tensors[1].name, tensors[1].bytes.data(), 3); });
  }
  SECTION("a tensor out of order") {
    failing([&](GgufWriter& w) { w.write_tensor(tensors[2].name, tensors[2].bytes); });
  }
  SECTION("a part running past the tensor") {
    failing([&](GgufWriter& w) {
      w.append(tensors[1].bytes.data(), 10);
      w.append(tensors[1].bytes.data(), tensors[1].bytes.size());
    });
  }
  SECTION("whole-tensor write after a partial append") {
    failing([&](GgufWriter& w) {
      w.append(tensors[1].bytes.data(), 4);
      w.write_tensor(tensors[1].name, tensors[1].bytes);
    });
  }
  SECTION("finish before every tensor is written") {
    failing([&](GgufWriter& w) { w.finish(); });
  }
  SECTION("a null data pointer") {
    failing([&](GgufWriter& w) { w.write_tensor(tensors[1].name, nullptr, tensors[1].bytes.size()); });
  }
  SECTION("destruction without finish") {
    put_file(target, "old contents");
    std::string temp;
    {
      GgufWriter w(target, {}, specs(tensors));
      for (const auto& t : tensors) w.write_tensor(t.name, t.bytes);
      temp = w.temp_path();
      CHECK(fs::exists(temp));
    }
    CHECK(!fs::exists(temp));
    CHECK(file_bytes(target).size() == 12);
  }
  SECTION("a moved writer keeps one temporary and finishes once") {
    GgufWriter a(target, {}, specs(tensors));
    GgufWriter b = std::move(a);
    for (const auto& t : tensors) b.write_tensor(t.name, t.bytes);
    b.finish();
    CHECK(file_bytes(target) == lowbit::io::serialize_gguf({}, tensors));
    CHECK(dir.entries() == std::vector<std::string>{"model.gguf"});
  }
  SECTION("finish replaces an existing file") {
    put_file(target, "old contents");
    GgufWriter w(target, {}, specs(tensors));
    for (const auto& t : tensors) w.write_tensor(t.name, t.bytes);
    w.finish();
    CHECK(file_bytes(target) == lowbit::io::serialize_gguf({}, tensors));
  }
  SECTION("one-shot writes with a wrong byte count create nothing") {
    auto bad = tensors;
    bad[4].bytes.pop_back();
    throws_with([&] { lowbit::io::write_gguf(target, {}, bad); },
                {"blk.0.attn_v.weight", "expected 220 bytes", "got 219"});
    CHECK(dir.entries().empty());
  }
}

TEST_CASE("gguf writer: a row that does not fit the type's block is refused before writing") {
  TempDir dir;
  const std::string target = dir.file("out.gguf");
  const auto refuse = [&](const TensorSpec& s, std::initializer_list<std::string> parts) {
    throws_with([&] { GgufWriter w(target, {}, {s}); }, parts);
    CHECK(dir.entries().empty());
  };
  // stories260K's FFN-down rows: 172 = 4 * 43 fit no block.
  refuse({"blk.0.ffn_down.weight", {172, 64}, Type::Q4_0},
         {"blk.0.ffn_down.weight", "row length 172", "Q4_0", "blocks of 32",
          "types that fit: F32, F16, I8, I16, I32, I64, F64, BF16"});
  // 64-wide rows fit 32-weight blocks (and 64-weight ones) but not 256-weight super-blocks.
  refuse({"blk.0.attn_q.weight", {64, 64}, Type::Q4_K},
         {"blk.0.attn_q.weight", "row length 64", "Q4_K", "blocks of 256", "Q4_0", "Q8_0", "IQ4_NL",
          "MXFP4"});
  try {
    GgufWriter w(target, {}, {TensorSpec{"t", {64, 2}, Type::Q6_K}});
  } catch (const lowbit::Error& e) {
    CHECK(std::string(e.what()).find("Q4_K") == std::string::npos);  // 256 does not divide 64
  }
  // A row that fits is accepted.
  GgufWriter ok(target, {}, {TensorSpec{"t", {256, 1}, Type::Q4_K}});
  CHECK(ok.tensors()[0].n_bytes == 144);
}

TEST_CASE("gguf writer: every other bad argument is refused with nothing written") {
  TempDir dir;
  const std::string target = dir.file("out.gguf");
  const auto refuse = [&](const Metadata& m, const std::vector<TensorSpec>& ts,
                          std::initializer_list<std::string> parts, WriteOptions o = {}) {
    throws_with([&] { GgufWriter w(target, m, ts, o); }, parts);
    CHECK(dir.entries().empty());
  };
  const TensorSpec ok{"t", {32}, Type::F32};
  // Tensor names and shapes.
  refuse({}, {TensorSpec{"", {32}, Type::F32}}, {"name is empty"});
  refuse({}, {TensorSpec{std::string(64, 'n'), {32}, Type::F32}}, {"64 bytes", "at most 63"});
  refuse({}, {TensorSpec{std::string("a\0b", 3), {32}, Type::F32}}, {"NUL"});
  refuse({}, {ok, ok}, {"'t'", "duplicate tensor name"});
  refuse({}, {TensorSpec{"t", {}, Type::F32}}, {"'t'", "1..4 dims"});
  refuse({}, {TensorSpec{"t", {1, 1, 1, 1, 1}, Type::F32}}, {"1..4 dims"});
  refuse({}, {TensorSpec{"t", {0}, Type::F32}}, {"dimension 0"});
  refuse({}, {TensorSpec{"t", {uint64_t(1) << 31}, Type::F32}}, {"out of range"});
  refuse({}, {TensorSpec{"t", {1u << 30, 1u << 30, 1u << 30}, Type::F32}}, {"element count overflows"});
  refuse({}, {TensorSpec{"t", {1u << 30, 1u << 30, 4}, Type::F32}}, {"byte size overflows"});
  refuse({}, {TensorSpec{"t", {32}, Type(4)}}, {"'t'", "4 is not a ggml tensor type"});
  refuse({}, {TensorSpec{"t", {32}, Type(99)}}, {"99"});
  // Metadata keys and values.
  refuse({{"", Value::of_bool(true)}}, {ok}, {"key is empty"});
  refuse({{"a\x01", Value::of_bool(true)}}, {ok}, {"a\\x01", "0x01", "printable ASCII"});
  refuse({{"caf\xc3\xa9", Value::of_bool(true)}}, {ok}, {"0xc3", "position 3"});
  refuse({{"a\x7f", Value::of_bool(true)}}, {ok}, {"0x7f"});
  refuse({{"k", Value::of_bool(true)}, {"k", Value::of_bool(true)}}, {ok}, {"'k'", "duplicate key"});
  refuse({{"k", Value::of_array(ValueType::Int32, {Value::of_string("x")})}}, {ok},
         {"'k'", "array of int32 holds a string"});
  Value big = Value::of_uint8(0);
  big.u = 256;
  refuse({{"k", big}}, {ok}, {"'k'", "uint8 value 256 is out of range"});
  Value small = Value::of_int16(0);
  small.i = -32769;
  refuse({{"k", small}}, {ok}, {"int16 value -32769"});
  Value b2 = Value::of_bool(true);
  b2.u = 2;
  refuse({{"k", b2}}, {ok}, {"bool value 2"});
  Value unknown;
  unknown.type = ValueType(13);
  refuse({{"k", unknown}}, {ok}, {"unknown value type 13"});
  Value deep = Value::of_array(ValueType::Int32, {});
  for (int k = 0; k < 8; ++k) deep = Value::of_array(ValueType::Array, {deep});
  refuse({{"k", deep}}, {ok}, {"nested deeper than 8"});
  // Alignment.
  refuse({{"general.alignment", Value::of_uint64(32)}}, {ok}, {"general.alignment", "uint32 power of two"});
  refuse({{"general.alignment", Value::of_uint32(48)}}, {ok}, {"power of two", "48"});
  refuse({{"general.alignment", Value::of_uint32(0)}}, {ok}, {"power of two"});
  WriteOptions a24;
  a24.alignment = 24;
  refuse({}, {ok}, {"alignment", "power of two", "24"}, a24);
  WriteOptions a64;
  a64.alignment = 64;
  refuse({{"general.alignment", Value::of_uint32(128)}}, {ok}, {"128 differs from the alignment option 64"}, a64);
  // Arrays nested exactly 8 deep are the limit the reader accepts, so they are written.
  Value deepest = Value::of_array(ValueType::Int32, {});
  for (int k = 0; k < 7; ++k) deepest = Value::of_array(ValueType::Array, {deepest});
  const auto bytes = lowbit::io::serialize_gguf({{"k", deepest}}, std::vector<TensorData>{});
  CHECK(GgufFile::from_bytes(bytes.data(), bytes.size()).at("k") == deepest);
}

TEST_CASE("gguf writer: refuses the input file, unwritable folders and bad paths") {
  TempDir dir;
  const auto tensors = mixed_tensors();
  const std::string in = dir.file("in.gguf");
  lowbit::io::write_gguf(in, {}, tensors);
  const auto before = file_bytes(in);
  const auto src = GgufFile::open(in);
  CHECK(src.path() == in);
  WriteOptions o;
  o.inputs = {src.path()};
  // The same path, another spelling of it, a hard link and a symbolic link to it.
  REQUIRE(::link(in.c_str(), dir.file("hard.gguf").c_str()) == 0);
  fs::create_symlink(in, dir.file("soft.gguf"));
  for (const std::string& out : {in, dir.path.string() + "/./in.gguf", dir.file("hard.gguf"), dir.file("soft.gguf")}) {
    INFO(out);
    CHECK(lowbit::io::same_file(out, in));
    throws_with([&] { GgufWriter w(out, lowbit::io::output_metadata(src), specs(tensors), o); },
                {"is the same file as the input", in});
    throws_with([&] { lowbit::io::write_gguf(out, {}, tensors, o); }, {"same file as the input"});
  }
  CHECK(file_bytes(in) == before);
  CHECK(!lowbit::io::same_file(in, dir.file("absent.gguf")));
  CHECK(!lowbit::io::same_file(dir.file("absent.gguf"), dir.file("absent.gguf")));
  CHECK(!lowbit::io::same_file(in, dir.file("other")));
  put_file(dir.file("other"), "x");
  CHECK(!lowbit::io::same_file(in, dir.file("other")));
  // Folders that are missing, not folders, or not writable; a folder as the target; no path.
  throws_with([&] { lowbit::io::write_gguf(dir.file("no/such/out.gguf"), {}, tensors); },
              {"folder", "no/such", "does not exist"});
  throws_with([&] { lowbit::io::write_gguf(dir.file("other/out.gguf"), {}, tensors); },
              {"other", "is not a folder"});
  throws_with([&] { lowbit::io::write_gguf(dir.path.string(), {}, tensors); }, {"is a folder"});
  throws_with([&] { lowbit::io::write_gguf("", {}, tensors); }, {"empty path"});
  fs::create_directory(dir.file("ro"));
  ::chmod(dir.file("ro").c_str(), 0555);
  if (::geteuid() != 0) {
    throws_with([&] { lowbit::io::write_gguf(dir.file("ro/out.gguf"), {}, tensors); },
                {"folder", "ro", "is not writable"});
    CHECK(fs::is_empty(dir.file("ro")));
  } else {
    WARN("running as root: a read-only folder is writable, that check is skipped");
  }
  ::chmod(dir.file("ro").c_str(), 0755);
  // /proc takes no new files, whoever runs the test (root included).
  throws_with([&] { lowbit::io::write_gguf("/proc/lowbit-test.gguf", {}, tensors); }, {"path:", "/proc"});
  CHECK(!fs::exists("/proc/lowbit-test.gguf"));
  // Bare file names write into the current folder.
  CHECK(lowbit::io::parent_folder("x.gguf") == ".");
  CHECK(lowbit::io::parent_folder("/x.gguf") == "/");
  CHECK(lowbit::io::parent_folder("a/b/x.gguf") == "a/b");
}

TEST_CASE("gguf writer: stories260K's metadata and tensors are kept through a rewrite") {
  const std::string path = std::string(LOWBIT_SHARED_DIR) + "/models/stories260K.gguf";
  if (!std::ifstream(path)) {
    WARN("SKIPPED: " << path << " is absent (needs ../shared beside the project)");
    return;
  }
  const auto src = GgufFile::open(path);
  TempDir dir;
  WriteOptions o;
  o.inputs = {path};
  o.file_type = uint32_t(FileType::ALL_F32);
  std::vector<TensorSpec> ts;
  for (const auto& t : src.tensors()) ts.push_back({t.name, t.ne, t.type});
  GgufWriter w(dir.file("copy.gguf"), lowbit::io::output_metadata(src), ts, o);
  for (const auto& t : src.tensors()) w.write_tensor(t.name, src.raw(t));
  w.finish();
  const auto out = GgufFile::open(dir.file("copy.gguf"));
  // Every source key in order with the same value; file_type and quantization_version set.
  const auto without_file_keys = [](Metadata m) {
    lowbit::io::remove_value(m, "general.file_type");
    lowbit::io::remove_value(m, "general.quantization_version");
    return m;
  };
  const Metadata a = without_file_keys(src.metadata()), b = without_file_keys(out.metadata());
  REQUIRE(a.size() == b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    CHECK(a[k].first == b[k].first);
    CHECK(a[k].second == b[k].second);
  }
  CHECK(out.metadata().size() == a.size() + 2);
  CHECK(out.at("general.file_type") == Value::of_uint32(0));
  CHECK(out.at("general.quantization_version") == Value::of_uint32(2));
  CHECK(out.at("tokenizer.ggml.tokens").as_array().size() == 512);
  REQUIRE(out.tensors().size() == src.tensors().size());
  for (size_t t = 0; t < src.tensors().size(); ++t) {
    const auto a = src.raw(src.tensors()[t]);
    const auto b = out.raw(out.tensors()[t]);
    CHECK(out.tensors()[t].name == src.tensors()[t].name);
    REQUIRE(a.size == b.size);
    CHECK(std::memcmp(a.data, b.data, size_t(a.size)) == 0);
  }
  CHECK(out.read("output.weight") == src.read("output.weight"));
}
