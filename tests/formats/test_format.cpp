// test_format.cpp: the run-time table, row and matrix functions, and every rejected input.
#include <lowbit/formats/format.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace lowbit::formats;
using Catch::Matchers::Contains;

namespace {

const Type kBlockTypes[] = {Type::Q8_0, Type::Q4_0, Type::Q4_1, Type::Q5_0, Type::Q5_1,
                            Type::Q2_K, Type::Q3_K, Type::Q4_K, Type::Q5_K, Type::Q6_K,
                            Type::IQ4_NL, Type::IQ4_XS};

std::vector<float> gaussian(std::mt19937& rng, size_t n) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(n);
  for (auto& v : x) v = g(rng);
  return x;
}

}  // namespace

TEST_CASE("find_format knows the twelve block formats and nothing else") {
  for (Type t : kBlockTypes) {
    REQUIRE(find_format(t) != nullptr);
    CHECK(find_format(t)->type == t);
  }
  for (Type t : {Type::F32, Type::F16, Type::BF16, Type::Q8_K, Type::IQ2_XXS, Type::Q8_1, Type::I8})
    CHECK(find_format(t) == nullptr);
  CHECK(find_format(Type(99)) == nullptr);
}

TEST_CASE("format() names the type and the supported ones when it has no codec") {
  CHECK_THROWS_AS(format(Type::IQ2_XXS), lowbit::Error);
  CHECK_THROWS_WITH(format(Type::IQ2_XXS), Contains("IQ2_XXS") && Contains("Q4_K") && Contains("Q8_0"));
  CHECK_THROWS_WITH(format(Type(99)), Contains("type99") && Contains("Q6_K"));
  CHECK_THROWS_WITH(format(Type::F16), Contains("F16"));
}

TEST_CASE("decode_row and quantize_row agree with the codecs block by block") {
  std::mt19937 rng(1);
  for (Type t : kBlockTypes) {
    const Format& f = format(t);
    const int n = 3 * 256;
    const std::vector<float> x = gaussian(rng, n);
    std::vector<uint8_t> q(size_t(row_bytes(t, n)) + 7, 0xEE);
    quantize_row(t, x.data(), n, q.data());
    for (size_t i = size_t(row_bytes(t, n)); i < q.size(); ++i) REQUIRE(q[i] == 0xEE);  // nothing past the row
    std::vector<float> y(n + 1, 42.0f), z(n);
    decode_row(t, q.data(), n, y.data());
    REQUIRE(y[size_t(n)] == 42.0f);
    for (int b = 0; b < n / f.block_size; ++b) {
      std::vector<uint8_t> one(size_t(f.type_size));
      f.quantize(x.data() + b * f.block_size, nullptr, one.data());
      REQUIRE(std::memcmp(one.data(), q.data() + size_t(b) * size_t(f.type_size), one.size()) == 0);
      f.decode(one.data(), z.data() + b * f.block_size);
    }
    for (int i = 0; i < n; ++i) REQUIRE(y[size_t(i)] == z[size_t(i)]);
  }
}

TEST_CASE("decode_row and quantize_row handle F32, F16 and BF16") {
  const float x[4] = {1.0f, -2.5f, 65504.0f, 1e-7f};
  uint8_t b[16];
  float y[4];
  quantize_row(Type::F32, x, 4, b);
  decode_row(Type::F32, b, 4, y);
  for (int i = 0; i < 4; ++i) CHECK(y[i] == x[i]);
  quantize_row(Type::F16, x, 4, b);
  CHECK(b[0] == 0x00);  // 1.0 = 0x3C00, little-endian
  CHECK(b[1] == 0x3C);
  decode_row(Type::F16, b, 4, y);
  CHECK(y[0] == 1.0f);
  CHECK(y[1] == -2.5f);
  CHECK(y[2] == 65504.0f);
  CHECK(y[3] == lowbit::half_to_float(lowbit::float_to_half(1e-7f)));  // a subnormal half
  quantize_row(Type::BF16, x, 4, b);
  CHECK(b[0] == 0x80);  // 1.0 = 0x3F80
  CHECK(b[1] == 0x3F);
  decode_row(Type::BF16, b, 4, y);
  CHECK(y[1] == -2.5f);
  CHECK(y[2] == 65536.0f);  // 65504 rounds to 2^16 in bfloat16 (8 significant bits)
}

TEST_CASE("quantize_row rejects NaN and Inf, naming the position, and writes nothing") {
  std::mt19937 rng(2);
  for (Type t : {Type::Q4_0, Type::Q4_K, Type::F16, Type::F32}) {
    std::vector<float> x = gaussian(rng, 512);
    std::vector<uint8_t> out(size_t(row_bytes(t, 512)), 0x5A);
    x[300] = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(quantize_row(t, x.data(), 512, out.data()), lowbit::Error);
    CHECK_THROWS_WITH(quantize_row(t, x.data(), 512, out.data()), Contains("x[300]") && Contains("nan"));
    x[300] = 0;
    x[17] = -std::numeric_limits<float>::infinity();
    CHECK_THROWS_WITH(quantize_row(t, x.data(), 512, out.data()), Contains("x[17]") && Contains("inf"));
    for (uint8_t c : out) REQUIRE(c == 0x5A);
  }
}

TEST_CASE("quantize_row rejects negative or non-finite importance") {
  std::mt19937 rng(3);
  std::vector<float> x = gaussian(rng, 256), w(256, 1.0f);
  std::vector<uint8_t> out(size_t(row_bytes(Type::Q6_K, 256)));
  w[9] = -0.5f;
  CHECK_THROWS_WITH(quantize_row(Type::Q6_K, x.data(), 256, out.data(), w.data()), Contains("importance[9]"));
  w[9] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(quantize_row(Type::Q6_K, x.data(), 256, out.data(), w.data()), Contains("importance[9]"));
  w[9] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(quantize_row(Type::Q6_K, x.data(), 256, out.data(), w.data()), lowbit::Error);
  w[9] = 0.0f;
  CHECK_NOTHROW(quantize_row(Type::Q6_K, x.data(), 256, out.data(), w.data()));
}

TEST_CASE("quantize_row refuses values F16 or BF16 would overflow") {
  const float x[2] = {1.0f, 70000.0f};
  uint8_t b[4];
  CHECK_THROWS_WITH(quantize_row(Type::F16, x, 2, b), Contains("x[1]") && Contains("F16"));
  const float ok[1] = {65519.0f};  // rounds to 65504
  CHECK_NOTHROW(quantize_row(Type::F16, ok, 1, b));
  const float big[2] = {3.0e38f, 3.4e38f};  // 3.4e38 rounds past bfloat16's largest finite value
  CHECK_THROWS_WITH(quantize_row(Type::BF16, big, 2, b), Contains("x[1]") && Contains("BF16"));
  CHECK_NOTHROW(quantize_row(Type::BF16, big, 1, b));
}

TEST_CASE("row functions reject n that is not a multiple of the block, naming type and block") {
  std::vector<float> x(300, 0.0f);
  std::vector<uint8_t> b(1024);
  CHECK_THROWS_AS(quantize_row(Type::Q4_K, x.data(), 300, b.data()), lowbit::Error);
  CHECK_THROWS_WITH(quantize_row(Type::Q4_K, x.data(), 300, b.data()), Contains("300") && Contains("Q4_K") && Contains("256"));
  CHECK_THROWS_WITH(decode_row(Type::Q8_0, b.data(), 33, x.data()), Contains("33") && Contains("Q8_0") && Contains("32"));
  CHECK_THROWS_WITH(decode_row(Type::Q2_K, b.data(), -256, x.data()), Contains("-256"));
  CHECK_NOTHROW(decode_row(Type::Q2_K, b.data(), 0, x.data()));
  CHECK_NOTHROW(decode_row(Type::F16, b.data(), 3, x.data()));  // plain types: any n
}

TEST_CASE("row functions reject unsupported types, listing the supported ones") {
  std::vector<float> x(256, 0.0f);
  std::vector<uint8_t> b(1024);
  for (Type t : {Type::IQ2_XXS, Type::Q8_K, Type::I32, Type(77)}) {
    CHECK_THROWS_AS(decode_row(t, b.data(), 256, x.data()), lowbit::Error);
    CHECK_THROWS_AS(quantize_row(t, x.data(), 256, b.data()), lowbit::Error);
  }
  CHECK_THROWS_WITH(decode_row(Type::IQ2_XXS, b.data(), 256, x.data()),
                    Contains("IQ2_XXS") && Contains("F32, F16, BF16") && Contains("Q5_K"));
  CHECK_THROWS_WITH(quantize_row(Type(77), x.data(), 256, b.data()), Contains("type77") && Contains("Q8_0"));
}

TEST_CASE("encode_block rejects NaN/Inf and out-of-range sub-block parameters") {
  const Format& f = format(Type::Q4_K);
  std::vector<float> x(256, 0.5f);
  uint8_t out[144];
  BlockParams p;
  p.d = 0x3C00;
  p.m = 0x3C00;
  CHECK_NOTHROW(encode_block(f, x.data(), p, out));
  p.scales[3] = 64;
  CHECK_THROWS_WITH(encode_block(f, x.data(), p, out), Contains("scales[3]") && Contains("0..63"));
  p.scales[3] = 0;
  p.mins[7] = -1;
  CHECK_THROWS_WITH(encode_block(f, x.data(), p, out), Contains("mins[7]"));
  p.mins[7] = 0;
  x[200] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(encode_block(f, x.data(), p, out), Contains("x[200]"));
  const Format& q3 = format(Type::Q3_K);
  BlockParams p3;
  p3.scales[0] = -33;
  x[200] = 0;
  CHECK_THROWS_WITH(encode_block(q3, x.data(), p3, out), Contains("scales[0]") && Contains("-32..31"));
}

TEST_CASE("quantize_matrix / decode_matrix: row after row, importance per column") {
  std::mt19937 rng(4);
  const lowbit::Index rows = 5, cols = 512;
  lowbit::MatrixXfR w(rows, cols);
  for (lowbit::Index r = 0; r < rows; ++r)
    for (lowbit::Index c = 0; c < cols; ++c) w(r, c) = gaussian(rng, 1)[0];
  std::vector<float> imp(static_cast<size_t>(cols));
  for (auto& v : imp) v = std::fabs(gaussian(rng, 1)[0]);
  for (Type t : {Type::Q4_K, Type::Q5_0, Type::F16}) {
    const std::vector<uint8_t> q = quantize_matrix(t, w, imp.data());
    const size_t rb = size_t(row_bytes(t, uint64_t(cols)));
    REQUIRE(q.size() == rb * size_t(rows));
    for (lowbit::Index r = 0; r < rows; ++r) {
      std::vector<float> row(w.row(r).data(), w.row(r).data() + cols);
      std::vector<uint8_t> one(rb);
      quantize_row(t, row.data(), cols, one.data(), imp.data());
      REQUIRE(std::memcmp(one.data(), q.data() + size_t(r) * rb, rb) == 0);
    }
    const lowbit::MatrixXfR d = decode_matrix(t, q.data(), rows, cols);
    for (lowbit::Index r = 0; r < rows; ++r) {
      std::vector<float> y(static_cast<size_t>(cols));
      decode_row(t, q.data() + size_t(r) * rb, cols, y.data());
      for (lowbit::Index c = 0; c < cols; ++c) REQUIRE(d(r, c) == y[size_t(c)]);
    }
  }
  // A block view of a larger matrix (outer stride != cols) quantizes the same.
  lowbit::MatrixXfR big(rows, cols + 256);
  big.leftCols(cols) = w;
  big.rightCols(256).setConstant(7.0f);
  CHECK(quantize_matrix(Type::Q8_0, big.leftCols(cols)) == quantize_matrix(Type::Q8_0, w));
  lowbit::MatrixXfR bad = w;
  bad(3, 100) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(quantize_matrix(Type::Q4_0, bad), Contains("w(3, 100)"));
  CHECK_THROWS_WITH(quantize_matrix(Type::Q4_K, w.leftCols(100)), Contains("100") && Contains("Q4_K"));
  CHECK_THROWS_WITH(decode_matrix(Type::Q4_0, nullptr, 2, 48), Contains("48") && Contains("Q4_0"));
  CHECK_THROWS_AS(decode_matrix(Type::IQ1_S, nullptr, 2, 256), lowbit::Error);
}
