// test_gguf.cpp: GGUF reader/writer: round trips, every tensor decoder, hostile and corrupt files.
#include <lowbit/io/gguf.hpp>

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>

using lowbit::io::GgufFile;
using lowbit::io::TensorF32;
using lowbit::io::Value;
using lowbit::io::ValueType;

namespace {

// Builds GGUF bytes by hand (independently of serialize_gguf) so tests can craft any field.
struct Bytes {
  std::vector<uint8_t> b;
  template <class T>
  Bytes& put(T x) {
    const auto* p = reinterpret_cast<const uint8_t*>(&x);
    b.insert(b.end(), p, p + sizeof(T));
    return *this;
  }
  Bytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b.insert(b.end(), {'G', 'G', 'U', 'F'});
    return put<uint32_t>(version).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
  }
  Bytes& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name).put<uint32_t>(uint32_t(ne.size()));
    for (auto d : ne) put<uint64_t>(d);
    return put<uint32_t>(type).put<uint64_t>(offset);
  }
  Bytes& pad(size_t align = 32) {
    b.resize((b.size() + align - 1) / align * align, 0);
    return *this;
  }
  Bytes& raw(const std::vector<uint8_t>& r) {
    b.insert(b.end(), r.begin(), r.end());
    return *this;
  }
  GgufFile parse() const { return GgufFile::from_bytes(b.data(), b.size()); }
};

std::vector<std::pair<std::string, Value>> sample_metadata() {
  Value u8; u8.type = ValueType::UInt8; u8.u = 200;
  Value i8; i8.type = ValueType::Int8; i8.i = -100;
  Value u16; u16.type = ValueType::UInt16; u16.u = 60000;
  Value i16; i16.type = ValueType::Int16; i16.i = -30000;
  Value i64; i64.type = ValueType::Int64; i64.i = -(int64_t(1) << 40);
  Value f64; f64.type = ValueType::Float64; f64.f = 3.141592653589793;
  std::vector<Value> strs = {Value::of_string("a"), Value::of_string(""), Value::of_string("\xe2\x96\x81the")};
  std::vector<Value> nested = {Value::of_array(ValueType::Int32, {Value::of_int32(1), Value::of_int32(-2)}),
                               Value::of_array(ValueType::Int32, {})};
  return {{"general.architecture", Value::of_string("llama")},
          {"u8", u8}, {"i8", i8}, {"u16", u16}, {"i16", i16},
          {"u32", Value::of_uint32(4000000000u)}, {"i32", Value::of_int32(-7)},
          {"u64", Value::of_uint64(uint64_t(1) << 63)}, {"i64", i64},
          {"f32", Value::of_float32(1e-5f)}, {"f64", f64}, {"bool", Value::of_bool(true)},
          {"strings", Value::of_array(ValueType::String, strs)},
          {"nested", Value::of_array(ValueType::Array, nested)}};
}

std::vector<TensorF32> sample_tensors() {
  lowbit::MatrixXfR m(3, 5);
  for (int i = 0; i < 15; ++i) m.data()[i] = 0.25f * float(i) - 1.0f;
  Eigen::VectorXf v(7);
  v << 1, -2, 3.5f, 0, 1e-30f, -1e30f, 7;
  TensorF32 t3{"cube", {2, 3, 4}, std::vector<float>(24)};
  for (int i = 0; i < 24; ++i) t3.data[size_t(i)] = float(i * i);
  return {TensorF32::from_matrix("m", m), TensorF32::from_vector("v", v), t3};
}

void check_same(const GgufFile& f, const std::vector<TensorF32>& tensors, uint32_t alignment) {
  const auto meta = sample_metadata();
  CHECK(f.version() == 3);
  CHECK(f.alignment() == alignment);
  CHECK(f.data_offset() % alignment == 0);
  REQUIRE(f.metadata().size() == meta.size() + (alignment != 32 ? 1 : 0));
  for (size_t k = 0; k < meta.size(); ++k) {
    CHECK(f.metadata()[k].first == meta[k].first);
    CHECK(f.metadata()[k].second.type == meta[k].second.type);
  }
  CHECK(f.at("u8").as_int() == 200);
  CHECK(f.at("i8").as_int() == -100);
  CHECK(f.at("u16").as_int() == 60000);
  CHECK(f.at("i16").as_int() == -30000);
  CHECK(f.at("u32").as_int() == 4000000000LL);
  CHECK(f.at("i32").as_int() == -7);
  CHECK(f.at("u64").u == uint64_t(1) << 63);
  CHECK_THROWS_AS(f.at("u64").as_int(), lowbit::Error);  // does not fit int64
  CHECK(f.at("i64").as_int() == -(int64_t(1) << 40));
  CHECK(f.at("f32").as_float() == double(1e-5f));
  CHECK(f.at("f64").as_float() == 3.141592653589793);
  CHECK(f.at("bool").as_bool());
  CHECK(f.get_string("general.architecture", "") == "llama");
  CHECK(f.get_int("absent", 42) == 42);
  CHECK(f.find("absent") == nullptr);
  CHECK_THROWS_AS(f.at("absent"), lowbit::Error);
  CHECK_THROWS_AS(f.at("u8").as_string(), lowbit::Error);
  CHECK_THROWS_AS(f.at("f32").as_bool(), lowbit::Error);
  CHECK_THROWS_AS(f.at("bool").as_array(), lowbit::Error);
  const auto& s = f.at("strings");
  CHECK(s.element_type == ValueType::String);
  REQUIRE(s.as_array().size() == 3);
  CHECK(s.as_array()[2].as_string() == "\xe2\x96\x81the");
  CHECK(s.as_array()[1].as_string().empty());
  const auto& n = f.at("nested").as_array();
  REQUIRE(n.size() == 2);
  CHECK(n[0].as_array()[1].as_int() == -2);
  CHECK(n[1].as_array().empty());
  REQUIRE(f.tensors().size() == tensors.size());
  for (const auto& t : tensors) {
    const auto& info = f.tensor(t.name);
    CHECK(info.ne == t.ne);
    CHECK(info.offset % alignment == 0);
    const lowbit::MatrixXfR m = f.read(info);
    CHECK(m.cols() == lowbit::Index(t.ne[0]));
    REQUIRE(m.size() == lowbit::Index(t.data.size()));
    CHECK(std::equal(t.data.begin(), t.data.end(), m.data()));
  }
  CHECK_THROWS_AS(f.tensor("absent"), lowbit::Error);
}

}  // namespace

TEST_CASE("gguf: write then read round trip (bytes and memory-mapped file)") {
  const auto tensors = sample_tensors();
  for (uint32_t alignment : {32u, 64u, 8u}) {
    const auto bytes = lowbit::io::serialize_gguf(sample_metadata(), tensors, alignment);
    check_same(GgufFile::from_bytes(bytes.data(), bytes.size()), tensors, alignment);
  }
  const std::string path = "test_gguf_roundtrip.gguf";
  lowbit::io::write_gguf(path, sample_metadata(), tensors);
  check_same(GgufFile::open(path), tensors, 32);
  std::remove(path.c_str());
  CHECK_THROWS_AS(GgufFile::open("no/such/file.gguf"), lowbit::Error);
}

TEST_CASE("gguf: the writer rejects bad arguments") {
  auto t = sample_tensors();
  CHECK_THROWS_AS(lowbit::io::serialize_gguf({}, t, 24), lowbit::Error);
  CHECK_THROWS_AS(lowbit::io::serialize_gguf({}, t, 0), lowbit::Error);
  t[0].data.pop_back();
  CHECK_THROWS_AS(lowbit::io::serialize_gguf({}, t, 32), lowbit::Error);
  CHECK_THROWS_AS(lowbit::io::serialize_gguf({}, {TensorF32{"x", {}, {}}}, 32), lowbit::Error);
  CHECK_THROWS_AS(lowbit::io::serialize_gguf({}, {TensorF32{"x", {1, 1, 1, 1, 1}, {1.f}}}, 32),
                  lowbit::Error);
  const auto bad = Value::of_array(ValueType::Int32, {Value::of_string("x")});
  CHECK_THROWS_AS(lowbit::io::serialize_gguf({{"k", bad}}, {}, 32), lowbit::Error);
  CHECK_THROWS_AS(lowbit::io::serialize_gguf({{"general.alignment", Value::of_uint32(64)}}, {}, 32),
                  lowbit::Error);
}

TEST_CASE("gguf: F16, BF16, Q8_0 and Q4_0 tensors decode to the values they encode (hand-made)") {
  // F16: 1, -2, 2^-24 (smallest subnormal), 65504 (largest finite), 0.5, -0
  const std::vector<uint16_t> h = {0x3C00, 0xC000, 0x0001, 0x7BFF, 0x3800, 0x8000};
  const std::vector<float> h_want = {1.f, -2.f, 5.9604644775390625e-8f, 65504.f, 0.5f, -0.f};
  // BF16: 1, -3, 0.15625 (0x3E20)
  const std::vector<uint16_t> bf = {0x3F80, 0xC040, 0x3E20};
  const std::vector<float> bf_want = {1.f, -3.f, 0.15625f};
  // Q8_0: two blocks; scales 0.5 (0x3800) and -0.25 (0xB400); codes k - 16 and -128 + 8k.
  std::vector<uint8_t> q8;
  std::vector<float> q8_want;
  for (int blk = 0; blk < 2; ++blk) {
    const uint16_t d = blk == 0 ? 0x3800 : 0xB400;
    const float df = blk == 0 ? 0.5f : -0.25f;
    q8.push_back(uint8_t(d & 0xff));
    q8.push_back(uint8_t(d >> 8));
    for (int k = 0; k < 32; ++k) {
      const int q = blk == 0 ? k - 16 : -128 + 8 * k;
      q8.push_back(uint8_t(int8_t(q)));
      q8_want.push_back(df * float(q));
    }
  }
  // Q4_0: one block, d = 2 (0x4000); byte j holds x[j] (low nibble j % 16) and x[j+16] (high 15 - j).
  std::vector<uint8_t> q4 = {0x00, 0x40};
  std::vector<float> q4_want(32);
  for (int j = 0; j < 16; ++j) {
    q4.push_back(uint8_t((j & 15) | ((15 - j) << 4)));
    q4_want[size_t(j)] = 2.0f * float(j - 8);
    q4_want[size_t(j + 16)] = 2.0f * float(7 - j);
  }
  Bytes b;
  b.header(5, 0)
      .tensor("h", {6}, 1, 0)
      .tensor("bf", {3}, 30, 32)
      .tensor("q8", {32, 2}, 8, 64)
      .tensor("q4", {32}, 2, 160)
      .tensor("hinf", {2}, 1, 192)
      .pad();
  const size_t base = b.b.size();
  b.b.resize(base + 224, 0);
  const uint16_t inf_nan[2] = {0x7C00, 0x7E00};
  std::memcpy(&b.b[base + 192], inf_nan, 4);
  std::memcpy(&b.b[base], h.data(), 12);
  std::memcpy(&b.b[base + 32], bf.data(), 6);
  std::memcpy(&b.b[base + 64], q8.data(), q8.size());
  std::memcpy(&b.b[base + 160], q4.data(), q4.size());
  const auto f = b.parse();
  const auto check = [&](const char* name, const std::vector<float>& want, lowbit::Index rows) {
    const lowbit::MatrixXfR m = f.read(name);
    REQUIRE(m.rows() == rows);
    REQUIRE(m.size() == lowbit::Index(want.size()));
    for (size_t i = 0; i < want.size(); ++i) CHECK(m.data()[i] == want[i]);
  };
  check("h", h_want, 1);
  check("bf", bf_want, 1);
  check("q8", q8_want, 2);
  check("q4", q4_want, 1);
  CHECK(std::signbit(f.read("h")(0, 5)));
  CHECK(f.tensor("q8").n_bytes == 68);
  // F16 infinity and NaN decode as such.
  const lowbit::MatrixXfR hinf = f.read("hinf");
  CHECK(std::isinf(hinf(0, 0)));
  CHECK(hinf(0, 0) > 0);
  CHECK(std::isnan(hinf(0, 1)));
}

TEST_CASE("gguf: every block format of lowbit/formats reads back through formats::decode_row") {
  // One 2 x 256 tensor per format (quantized by its reference rounding), written and read back:
  // read() gives exactly decode_row's floats, and those are near the values quantized.
  std::mt19937 rng(11);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::vector<float> x(512);
  for (float& v : x) v = n01(rng);
  std::vector<lowbit::io::TensorData> tensors;
  for (const lowbit::formats::Format& fm : lowbit::formats::detail::kFormats) {
    lowbit::io::TensorData t;
    t.name = std::string(fm.name);
    t.ne = {256, 2};
    t.type = fm.type;
    t.bytes.resize(size_t(lowbit::formats::row_bytes(fm.type, 512)));
    lowbit::formats::quantize_row(fm.type, x.data(), 512, t.bytes.data());
    tensors.push_back(std::move(t));
  }
  const auto bytes = lowbit::io::serialize_gguf({}, tensors);
  const auto f = GgufFile::from_bytes(bytes.data(), bytes.size());
  for (const auto& t : tensors) {
    INFO(t.name);
    const lowbit::MatrixXfR m = f.read(t.name);
    REQUIRE(m.rows() == 2);
    REQUIRE(m.cols() == 256);
    std::vector<float> want(512);
    lowbit::formats::decode_row(t.type, t.bytes.data(), 512, want.data());
    double err = 0, ref = 0;
    for (size_t i = 0; i < 512; ++i) {
      CHECK(std::memcmp(&m.data()[i], &want[i], 4) == 0);
      err += double(m.data()[i] - x[i]) * double(m.data()[i] - x[i]);
      ref += double(x[i]) * double(x[i]);
    }
    CHECK(err < 0.2 * ref);  // Q2_K, the coarsest, is about 0.12 on Gaussian values
  }
}

TEST_CASE("gguf: hostile headers throw lowbit::Error naming the problem") {
  const auto throws_with = [](const Bytes& b, const std::string& what) {
    try {
      (void)b.parse();
      FAIL("expected lowbit::Error mentioning '" << what << "'");
    } catch (const lowbit::Error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(what) != std::string::npos);
    }
  };
  throws_with(Bytes{}, "too small");
  throws_with(Bytes{{'G', 'G', 'U', 'X', 3, 0, 0, 0}}, "magic");
  throws_with(Bytes{}.header(0, 0, 1), "version 1");
  throws_with(Bytes{}.header(0, 0, 4), "version 4");
  throws_with(Bytes{}.header(0, 1ull << 60), "metadata count");
  throws_with(Bytes{}.header(1ull << 60, 0), "tensor count");
  throws_with(Bytes{}.header(0, 1).put<uint64_t>(1ull << 62).put<uint64_t>(0), "string length");
  throws_with(Bytes{}.header(0, 1).str("k").put<uint32_t>(13).put<uint64_t>(0), "unknown value type");
  throws_with(Bytes{}.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(1ull << 61),
              "array of");
  throws_with(Bytes{}.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(3).put<uint32_t>(1),
              "does not fit");
  throws_with(Bytes{}.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(2).str("abc").put<uint64_t>(9).put<uint64_t>(0),
              "string length");
  throws_with(Bytes{}.header(0, 1).str("k").put<uint32_t>(7).put<uint8_t>(2), "bool");
  {
    Bytes deep;
    deep.header(0, 1).str("k").put<uint32_t>(9);
    for (int i = 0; i < 20; ++i) deep.put<uint32_t>(9).put<uint64_t>(1);
    deep.put<uint32_t>(4).put<uint64_t>(0);
    throws_with(deep, "nested");
  }
  throws_with(Bytes{}.header(0, 2).str("k").put<uint32_t>(4).put<uint32_t>(1).str("k").put<uint32_t>(4).put<uint32_t>(1),
              "duplicate metadata");
  throws_with(Bytes{}.header(0, 1).str("general.alignment").put<uint32_t>(4).put<uint32_t>(24), "power of two");
  throws_with(Bytes{}.header(0, 1).str("general.alignment").put<uint32_t>(10).put<uint64_t>(32), "uint32");
  throws_with(Bytes{}.header(1, 0).tensor("t", {1, 1, 1, 1, 1}, 0, 0).pad().raw(std::vector<uint8_t>(4)),
              "dimensions");
  throws_with(Bytes{}.header(1, 0).tensor("t", {0}, 0, 0).pad(), "dimension 0");
  throws_with(Bytes{}.header(1, 0).tensor("t", {1ull << 40}, 0, 0).pad(), "out of range");
  throws_with(Bytes{}.header(1, 0).tensor("t", {1u << 30, 1u << 30, 1u << 30, 1u << 30}, 0, 0).pad(),
              "overflows");
  throws_with(Bytes{}.header(1, 0).tensor("t", {1u << 30, 1u << 30, 4}, 0, 0).pad(), "byte size overflows");
  throws_with(Bytes{}.header(1, 0).tensor("t", {1u << 20, 1u << 20}, 0, 0).pad(), "past the end");
  throws_with(Bytes{}.header(1, 0).tensor("t", {4}, 99, 0).pad(), "unknown tensor type");
  throws_with(Bytes{}.header(1, 0).tensor("t", {33}, 8, 0).pad(), "block size");
  throws_with(Bytes{}.header(1, 0).tensor("t", {4}, 0, 16).pad().raw(std::vector<uint8_t>(64)), "alignment");
  throws_with(Bytes{}.header(1, 0).tensor("t", {4}, 0, 32).pad().raw(std::vector<uint8_t>(40)), "past the end");
  throws_with(Bytes{}.header(1, 0).tensor("t", {4}, 0, 0), "truncated");
  throws_with(Bytes{}.header(2, 0).tensor("t", {4}, 0, 0).tensor("t", {4}, 0, 32).pad().raw(std::vector<uint8_t>(64)),
              "duplicate tensor");
  // Supported by the layout table, not by read() (IQ3_XXS has no codec): a clear error, not
  // garbage. Q4_K has one: all-zero blocks read as zeros.
  const auto iq3 = Bytes{}.header(1, 0).tensor("t", {256}, 18, 0).pad().raw(std::vector<uint8_t>(98)).parse();
  CHECK_THROWS_AS(iq3.read("t"), lowbit::Error);
  const auto q4k = Bytes{}.header(1, 0).tensor("t", {256}, 12, 0).pad().raw(std::vector<uint8_t>(144)).parse();
  CHECK(q4k.read("t").isZero());
  CHECK_THROWS_AS(GgufFile::from_bytes(nullptr, 4), lowbit::Error);
}

namespace {

void throws_with(const Bytes& b, std::initializer_list<std::string> parts) {
  try {
    (void)b.parse();
    FAIL("expected lowbit::Error");
  } catch (const lowbit::Error& e) {
    INFO(e.what());
    for (const auto& p : parts) CHECK(std::string(e.what()).find(p) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("gguf: hostile tensor names, keys and overlapping data are rejected naming the field") {
  const std::vector<uint8_t> data(256);
  // Tensor names: empty, 64 bytes (ggml's char[64] needs the NUL, so 63 is the most), a NUL byte.
  throws_with(Bytes{}.header(1, 0).tensor("", {4}, 0, 0).pad().raw(data), {"tensor 0 name is empty"});
  throws_with(Bytes{}.header(2, 0).tensor("a", {4}, 0, 0).tensor(std::string(64, 'x'), {4}, 0, 32).pad().raw(data),
              {"tensor 1 name", "64 bytes long", "at most 63"});
  throws_with(Bytes{}.header(1, 0).tensor(std::string(1000, 'y'), {4}, 0, 0).pad().raw(data), {"1000 bytes"});
  throws_with(Bytes{}.header(1, 0).tensor(std::string("a\0b", 3), {4}, 0, 0).pad().raw(data),
              {"a\\x00b", "NUL"});
  const auto ok63 = Bytes{}.header(1, 0).tensor(std::string(63, 'z'), {4}, 0, 0).pad().raw(data).parse();
  CHECK(ok63.tensors()[0].name.size() == 63);
  // Keys: empty, control bytes, DEL, bytes above 0x7f (UTF-8 too); printable ASCII with spaces is fine.
  throws_with(Bytes{}.header(0, 1).str("").put<uint32_t>(4).put<uint32_t>(1), {"metadata key 0", "is empty"});
  throws_with(Bytes{}.header(0, 2).str("ok").put<uint32_t>(4).put<uint32_t>(1).str("bad\nkey").put<uint32_t>(4).put<uint32_t>(1),
              {"metadata key 1", "bad\\x0akey", "0x0a", "position 3", "printable ASCII"});
  throws_with(Bytes{}.header(0, 1).str("del\x7f").put<uint32_t>(4).put<uint32_t>(1), {"0x7f"});
  throws_with(Bytes{}.header(0, 1).str("caf\xc3\xa9").put<uint32_t>(4).put<uint32_t>(1), {"0xc3"});
  throws_with(Bytes{}.header(0, 1).str(std::string("\0", 1)).put<uint32_t>(4).put<uint32_t>(1), {"0x00"});
  CHECK(Bytes{}.header(0, 1).str("a key ~!{}").put<uint32_t>(4).put<uint32_t>(1).parse().at("a key ~!{}").as_int() == 1);
  // Overlapping data ranges: the second tensor starts inside the first (both aligned), a tensor
  // inside another, the same offset twice, and listed out of order.
  throws_with(Bytes{}.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 32).pad().raw(data),
              {"tensor 'b'", "data range [32, 48)", "overlaps tensor 'a' at [0, 64)"});
  throws_with(Bytes{}.header(2, 0).tensor("a", {4}, 0, 0).tensor("b", {4}, 0, 0).pad().raw(data),
              {"overlaps"});
  throws_with(Bytes{}.header(3, 0).tensor("c", {4}, 0, 128).tensor("b", {40}, 0, 0).tensor("a", {4}, 0, 96).pad().raw(data),
              {"tensor 'a'", "overlaps tensor 'b' at [0, 160)"});
  // Adjacent ranges do not overlap, in any order.
  const auto adj = Bytes{}.header(3, 0).tensor("c", {8}, 0, 64).tensor("b", {16}, 0, 0).tensor("a", {8}, 0, 96).pad().raw(data).parse();
  CHECK(adj.tensors().size() == 3);
}

TEST_CASE("gguf: every ggml type's block is known; types read() cannot decode throw naming them") {
  // Elements and bytes per block of every ggml type, written out here from ggml's type traits.
  struct Geometry { uint32_t id; const char* name; uint64_t block, bytes; };
  const Geometry all[] = {
      {0, "F32", 1, 4}, {1, "F16", 1, 2}, {2, "Q4_0", 32, 18}, {3, "Q4_1", 32, 20},
      {6, "Q5_0", 32, 22}, {7, "Q5_1", 32, 24}, {8, "Q8_0", 32, 34}, {9, "Q8_1", 32, 36},
      {10, "Q2_K", 256, 84}, {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
      {14, "Q6_K", 256, 210}, {15, "Q8_K", 256, 292}, {16, "IQ2_XXS", 256, 66}, {17, "IQ2_XS", 256, 74},
      {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50}, {20, "IQ4_NL", 32, 18}, {21, "IQ3_S", 256, 110},
      {22, "IQ2_S", 256, 82}, {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1}, {25, "I16", 1, 2},
      {26, "I32", 1, 4}, {27, "I64", 1, 8}, {28, "F64", 1, 8}, {29, "IQ1_M", 256, 56},
      {30, "BF16", 1, 2}, {34, "TQ1_0", 256, 54}, {35, "TQ2_0", 256, 66}, {39, "MXFP4", 32, 17},
      {40, "NVFP4", 64, 36}, {41, "Q1_0", 128, 18}, {42, "Q2_0", 64, 18}};
  const std::vector<std::string> decodable = {"F32",  "F16",  "BF16", "Q8_0", "Q4_0",  "Q4_1",
                                              "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K",  "Q5_K",
                                              "Q6_K", "IQ4_NL", "IQ4_XS"};
  for (const auto& g : all) {
    INFO(g.name);
    // Two rows of two blocks each, then the data.
    const uint64_t n_bytes = 4 * g.bytes;
    const auto f = Bytes{}.header(1, 0).tensor("blk.0.w", {2 * g.block, 2}, g.id, 0).pad()
                       .raw(std::vector<uint8_t>(size_t(n_bytes), 0)).parse();
    const auto& t = f.tensor("blk.0.w");
    CHECK(lowbit::formats::to_string(t.type) == g.name);
    CHECK(t.n_bytes == n_bytes);
    CHECK(t.row_bytes() == 2 * g.bytes);
    CHECK(f.raw(t).size == n_bytes);
    CHECK(f.raw(t).data == f.tensor_data(t));
    CHECK(t.bits_per_weight() == 8.0 * double(g.bytes) / double(g.block));
    if (std::find(decodable.begin(), decodable.end(), g.name) != decodable.end()) {
      CHECK(f.read(t).size() == lowbit::Index(4 * g.block));
    } else {
      try {
        (void)f.read(t);
        FAIL("expected lowbit::Error");
      } catch (const lowbit::Error& e) {
        INFO(e.what());
        CHECK(std::string(e.what()).find(std::string("type ") + g.name + " ") != std::string::npos);
        CHECK(std::string(e.what()).find("'blk.0.w'") != std::string::npos);
      }
    }
    // One byte short of the data is truncated; a row that is not whole blocks is rejected.
    throws_with(Bytes{}.header(1, 0).tensor("t", {2 * g.block, 2}, g.id, 0).pad()
                    .raw(std::vector<uint8_t>(size_t(n_bytes - 1), 0)),
                {"past the end"});
    if (g.block > 1)
      throws_with(Bytes{}.header(1, 0).tensor("t", {g.block + 1}, g.id, 0).pad().raw(std::vector<uint8_t>(4096)),
                  {"block size", g.name});
  }
  // Removed ids and ids past the table are unknown.
  for (uint32_t id : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 43u, 1000u})
    throws_with(Bytes{}.header(1, 0).tensor("t", {256}, id, 0).pad().raw(std::vector<uint8_t>(2048)),
                {"unknown tensor type " + std::to_string(id)});
}

TEST_CASE("gguf: a file of IQ and TQ tensors opens; reading one to float names its type") {
  const auto f = Bytes{}.header(3, 0)
                     .tensor("blk.0.attn_q.weight", {256, 2}, 17, 0)    // IQ2_XS: 2 * 74 bytes
                     .tensor("blk.0.attn_k.weight", {256}, 34, 160)     // TQ1_0: 54 bytes
                     .tensor("blk.0.attn_norm.weight", {4}, 0, 224)
                     .pad()
                     .raw(std::vector<uint8_t>(240, 7))
                     .parse();
  CHECK(f.tensor("blk.0.attn_q.weight").n_bytes == 148);
  CHECK(f.tensor("blk.0.attn_k.weight").n_bytes == 54);
  CHECK(f.raw("blk.0.attn_q.weight").data[147] == 7);
  try {
    (void)f.read("blk.0.attn_q.weight");
    FAIL("expected lowbit::Error");
  } catch (const lowbit::Error& e) {
    CHECK(std::string(e.what()) ==
          "gguf: tensor 'blk.0.attn_q.weight': reading type IQ2_XS to float is not supported (F32, "
          "F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS "
          "are); its raw bytes are available through GgufFile::raw()");
  }
}

TEST_CASE("gguf: corpus of truncated and mutated files never crashes") {
  const auto bytes = lowbit::io::serialize_gguf(sample_metadata(), sample_tensors(), 32);
  // Every proper prefix is invalid (the last tensor ends at end of file).
  for (size_t n = 0; n < bytes.size(); ++n)
    CHECK_THROWS_AS(GgufFile::from_bytes(bytes.data(), n), lowbit::Error);
  // Random byte mutations: each either parses (and every tensor reads) or throws lowbit::Error.
  std::mt19937 rng(7);
  std::uniform_int_distribution<size_t> pos(0, bytes.size() - 1);
  std::uniform_int_distribution<int> val(0, 255), count(1, 4);
  int parsed = 0, rejected = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    auto m = bytes;
    for (int k = count(rng); k > 0; --k) m[pos(rng)] = uint8_t(val(rng));
    try {
      const auto f = GgufFile::from_bytes(m.data(), m.size());
      for (const auto& t : f.tensors()) (void)f.read(t);
      ++parsed;
    } catch (const lowbit::Error&) {
      ++rejected;
    }
  }
  CHECK(parsed > 0);    // flips inside tensor data keep the file valid
  CHECK(rejected > 0);  // flips in the header do not
}

TEST_CASE("gguf: stories260K header matches the models README") {
  const std::string path = std::string(LOWBIT_SHARED_DIR) + "/models/stories260K.gguf";
  if (!std::ifstream(path)) {
    WARN("SKIPPED: " << path << " is absent (needs ../shared beside the project)");
    return;
  }
  const auto f = GgufFile::open(path);
  CHECK(f.version() == 3);
  CHECK(f.tensors().size() == 48);
  CHECK(f.metadata().size() == 19);
  CHECK(f.alignment() == 32);
  CHECK(f.data_offset() == 14176);
  CHECK(f.file_size() == 1185376);
  CHECK(f.at("tokenizer.ggml.tokens").as_array().size() == 512);
  CHECK(f.at("tokenizer.ggml.scores").as_array()[300].as_float() == -41.0);
  CHECK(f.at("tokenizer.ggml.seperator_token_id").as_int() == 4294967295LL);
  CHECK(f.get_int("llama.feed_forward_length", 0) == 172);
  CHECK(f.tensor("blk.3.ffn_down.weight").offset == 355840 + 3 * 181760);
  CHECK(f.tensor("output.weight").offset == 131328);
  const auto& last = f.tensors().back();
  CHECK(f.data_offset() + last.offset + last.n_bytes == f.file_size());
  CHECK(f.read("output.weight") == f.read("token_embd.weight"));
}
