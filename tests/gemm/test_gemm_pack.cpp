// test_gemm_pack.cpp: pack_weights keeps every code and parameter, pads safely, rejects bad input.
#include "gemm_test_util.hpp"

#include <catch2/catch.hpp>

using namespace lowbit;

namespace {

template <int Bits>
void check_pack(Index N, Index K, Scheme s, std::mt19937& rng) {
  const auto w = test::random_weights<Bits>(N, K, s, rng);
  const PackedWeights p = pack_weights(w);
  const MatrixXiR q = w.codes();
  REQUIRE(p.rows() == N);
  REQUIRE(p.cols() == K);
  CHECK(p.nibbles() == (Bits <= 4));
  const int offset = s.symmetric ? 1 << (Bits - 1) : 0;
  for (Index n = 0; n < N; ++n) {
    for (Index k = 0; k < K; ++k) REQUIRE(p.code(n, k) == q(n, k) + offset);
    for (Index k = K; k < p.padded_cols(); ++k) REQUIRE(p.code(n, k) == 0);
    for (Index g = 0; g < p.groups(); ++g) {
      const AffineParams a = w.params().at(param_index(s, K, n, p.group_begin(g)));
      REQUIRE(p.zero_point(n, g) == a.zero_point + offset);
      if (p.half_scales())
        REQUIRE(std::abs(p.scale(n, g) - a.scale) <= a.scale * 0x1p-11f);
      else
        REQUIRE(p.scale(n, g) == a.scale);
      int32_t sum = 0;
      for (Index k = p.group_begin(g); k < p.group_end(g); ++k) sum += q(n, k) - a.zero_point;
      REQUIRE(p.wsum(n, g) == sum);
    }
  }
}

}  // namespace

TEST_CASE("pack_weights keeps codes, zero points, scales and group sums", "[gemm][pack]") {
  std::mt19937 rng(1);
  for (bool sym : {true, false})
    for (Index K : {Index(1), Index(7), Index(64), Index(172), Index(300)}) {
      const Index N = 33;
      check_pack<8>(N, K, Scheme::per_channel(8, sym), rng);
      check_pack<8>(N, K, Scheme::per_group(8, 32, sym), rng);
      check_pack<8>(N, K, Scheme::per_tensor(8, sym), rng);
      check_pack<6>(N, K, Scheme::per_group(6, 64, sym), rng);
      check_pack<5>(N, K, Scheme::per_channel(5, sym), rng);
      check_pack<4>(N, K, Scheme::per_group(4, 32, sym), rng);
      check_pack<4>(N, K, Scheme::per_group(4, 128, sym), rng);
      check_pack<4>(N, K, Scheme::per_channel(4, sym), rng);
      check_pack<3>(N, K, Scheme::per_group(3, 64, sym), rng);
      check_pack<2>(N, K, Scheme::per_group(2, 32, sym), rng);
    }
}

TEST_CASE("4-bit group-32 weights store 4.5 bits per weight with half scales", "[gemm][pack]") {
  std::mt19937 rng(2);
  const auto p = pack_weights(test::random_weights<4>(64, 256, Scheme::per_group(4, 32), rng));
  CHECK(p.half_scales());
  CHECK(p.weight_bytes() == 64 * 256 / 2 + 64 * (256 / 32) * 2);
  const auto p8 = pack_weights(test::random_weights<8>(64, 256, Scheme::per_channel(8), rng));
  CHECK(!p8.half_scales());
  CHECK(p8.weight_bytes() == 64 * 256 + 64 * 4);
}

TEST_CASE("scales outside the normal half range are kept in float", "[gemm][pack]") {
  MatrixXiR q = MatrixXiR::Constant(2, 32, 3);
  QuantParams params{Scheme::per_group(4, 32), {1e-6f, 0.5f}, {0, 0}};
  const auto p = pack_weights(QuantizedMatrix<4>(q, params));
  CHECK(!p.half_scales());
  CHECK(p.scale(0, 0) == 1e-6f);
}

TEST_CASE("pack_weights rejects what the kernels cannot run", "[gemm][pack]") {
  std::mt19937 rng(3);
  CHECK_THROWS_WITH(pack_weights(test::random_weights<4>(4, 40, Scheme::per_group(4, 20), rng)),
                    Catch::Contains("group_size"));
  CHECK_THROWS_WITH(pack_weights(test::random_weights<8>(4, 40, Scheme::per_group(8, 10), rng)),
                    Catch::Contains("group_size"));
  CHECK_NOTHROW(pack_weights(test::random_weights<8>(4, 40, Scheme::per_group(8, 12), rng)));
  CHECK_THROWS_WITH(pack_weights(QuantizedMatrix<8>()), Catch::Contains("non-empty"));
  CHECK_THROWS_WITH(pack_weights(test::random_weights<8>(1, PackedWeights::max_cols + 1,
                                                         Scheme::per_channel(8), rng)),
                    Catch::Contains("cols"));
}
