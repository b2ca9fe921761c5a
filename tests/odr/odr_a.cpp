// odr_a.cpp: first of two translation units that include every lowbit header (ODR check).
#include <lowbit/lowbit.hpp>

#include <catch2/catch.hpp>

#include <vector>

lowbit::MatrixXfR odr_roundtrip_b(const lowbit::MatrixXfR& x);
lowbit::MatrixXfR odr_decode_b(lowbit::formats::Type type, const std::vector<uint8_t>& blocks,
                               lowbit::Index rows, lowbit::Index cols);

TEST_CASE("headers included from two translation units agree") {
  lowbit::MatrixXfR x(2, 3);
  x << -1.0f, 0.5f, 2.0f, 0.25f, -0.75f, 1.0f;
  const auto params = lowbit::choose_params(x, lowbit::Scheme::per_channel(8));
  const lowbit::MatrixXfR a = lowbit::dequantize(lowbit::quantize(x, params), params);
  const lowbit::MatrixXfR b = odr_roundtrip_b(x);
  REQUIRE(a == b);
}

TEST_CASE("GGUF block formats encoded in one translation unit decode alike in the other") {
  lowbit::MatrixXfR w(2, 256);
  for (lowbit::Index c = 0; c < 256; ++c) {
    w(0, c) = float(c % 17) * 0.25f - 2.0f;
    w(1, c) = float((c * 7) % 23) * -0.5f + 3.0f;
  }
  for (auto type : {lowbit::formats::Type::Q4_K, lowbit::formats::Type::Q8_0}) {
    const std::vector<uint8_t> q = lowbit::formats::quantize_matrix(type, w);
    REQUIRE(lowbit::formats::decode_matrix(type, q.data(), 2, 256) == odr_decode_b(type, q, 2, 256));
  }
  REQUIRE(lowbit::half_to_float(lowbit::float_to_half(0.1f)) == lowbit::half_to_float(0x2E66));
}
