// test_quantized_matrix.cpp: QuantizedMatrix storage, accounting and validation.
#include <lowbit/core/quantized_matrix.hpp>

#include <catch2/catch.hpp>

#include <random>

using lowbit::MatrixXfR;
using lowbit::MatrixXiR;
using lowbit::Scheme;

namespace {
MatrixXfR random_matrix(lowbit::Index rows, lowbit::Index cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  MatrixXfR x(rows, cols);
  for (lowbit::Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  return x;
}
}  // namespace

TEST_CASE("stored codes and dequantized values equal the unpacked contract") {
  const MatrixXfR w = random_matrix(9, 17, 1);
  auto check = [&](auto q, const Scheme& s) {
    const auto p = lowbit::choose_params(w, s);
    CHECK(q.codes() == lowbit::quantize(w, p));
    CHECK(q.dequantize() == lowbit::dequantize(lowbit::quantize(w, p), p));
    CHECK(q.rows() == 9);
    CHECK(q.cols() == 17);
  };
  check(lowbit::quantize_weights<8>(w, Scheme::per_channel(8)), Scheme::per_channel(8));
  check(lowbit::quantize_weights<4>(w, Scheme::per_group(4, 4, false)), Scheme::per_group(4, 4, false));
  check(lowbit::quantize_weights<3>(w, Scheme::per_group(3, 5)), Scheme::per_group(3, 5));
  check(lowbit::quantize_weights<2>(w, Scheme::per_group(2, 8, false)), Scheme::per_group(2, 8, false));
}

TEST_CASE("INT4 rows pack two codes a byte with the even index low") {
  MatrixXiR codes(2, 3);
  codes << 1, -2, 3, -8, 7, 0;
  const lowbit::Int4Matrix q(codes, lowbit::QuantParams{Scheme::per_tensor(4), {0.5f}, {0}});
  REQUIRE(q.row_stride() == 2);
  CHECK(q.row_data(0)[0] == 0xE1);
  CHECK(q.row_data(0)[1] == 0x03);
  CHECK(q.row_data(1)[0] == 0x78);
  CHECK(q.row_data(1)[1] == 0x00);
  CHECK(q.codes() == codes);
}

TEST_CASE("bits per weight count codes, scales and zero points") {
  // 4096 x 4096 INT4 g128 symmetric: 4 + 32 / 128 = 4.25 bits; asymmetric g32: 4 + 40 / 32.
  const Scheme g128 = Scheme::per_group(4, 128);
  CHECK(lowbit::quantized_bytes(g128, 4096, 4096) == 4096u * 2048u + 4u * 4096u * 32u);
  const MatrixXfR w = random_matrix(64, 256, 2);
  CHECK(lowbit::quantize_weights<4>(w, g128).bits_per_weight() == 4.25);
  CHECK(lowbit::quantize_weights<4>(w, Scheme::per_group(4, 32, false)).bits_per_weight() == 5.25);
  CHECK(lowbit::quantize_weights<8>(w, Scheme::per_channel(8)).bits_per_weight() == 8.0 + 32.0 / 256);
  CHECK(lowbit::quantize_weights<2>(w, Scheme::per_group(2, 32)).bits_per_weight() == 3.0);
  // 3 x 5 INT4 per channel: 3 bytes a row (one half-used) + 3 scales = 21 bytes for 15 weights.
  const auto odd = lowbit::quantize_weights<4>(random_matrix(3, 5, 3), Scheme::per_channel(4));
  CHECK(odd.bytes() == 21);
  CHECK(odd.bits_per_weight() == Approx(21.0 * 8 / 15));
  // INT3 packs densely: 3 x 8 codes are 3 bytes a row.
  const auto three = lowbit::quantize_weights<3>(random_matrix(3, 8, 4), Scheme::per_tensor(3));
  CHECK(three.bytes() == 9 + 4);
}

TEST_CASE("QuantizedMatrix rejects mismatched bits, bad codes and bad parameters") {
  const MatrixXfR w = random_matrix(4, 8, 5);
  CHECK_THROWS_WITH(lowbit::quantize_weights<4>(w, Scheme::per_channel(8)),
                    Catch::Contains("scheme.bits"));
  CHECK_THROWS_WITH(lowbit::quantize_weights<8>(w, lowbit::choose_params(w, Scheme::per_channel(4))),
                    Catch::Contains("params.scheme.bits"));
  MatrixXiR codes = MatrixXiR::Zero(4, 8);
  codes(2, 3) = 8;
  const lowbit::QuantParams p{Scheme::per_tensor(4), {1.0f}, {0}};
  CHECK_THROWS_WITH(lowbit::Int4Matrix(codes, p), Catch::Contains("codes(2, 3)"));
  codes(2, 3) = 0;
  CHECK_THROWS_AS(lowbit::Int4Matrix(codes, lowbit::QuantParams{Scheme::per_channel(4), {1.0f}, {0}}),
                  lowbit::Error);
  CHECK_THROWS_AS(lowbit::Int8Matrix(MatrixXiR(0, 0), lowbit::QuantParams{Scheme::per_tensor(8), {1.0f}, {0}}),
                  lowbit::Error);
  CHECK_THROWS_AS(lowbit::quantize_weights<4>(MatrixXfR(0, 4), Scheme::per_tensor(4)), lowbit::Error);
  CHECK_THROWS_AS(lowbit::quantize_weights<4>(w, Scheme::per_group(4, 0)), lowbit::Error);
}
