// odr_a.cpp: first of two translation units that include every lowbit header (ODR check).
#include <lowbit/lowbit.hpp>

#include <catch2/catch.hpp>

lowbit::MatrixXfR odr_roundtrip_b(const lowbit::MatrixXfR& x);

TEST_CASE("headers included from two translation units agree") {
  lowbit::MatrixXfR x(2, 3);
  x << -1.0f, 0.5f, 2.0f, 0.25f, -0.75f, 1.0f;
  const auto params = lowbit::choose_params(x, lowbit::Scheme::per_channel(8));
  const lowbit::MatrixXfR a = lowbit::dequantize(lowbit::quantize(x, params), params);
  const lowbit::MatrixXfR b = odr_roundtrip_b(x);
  REQUIRE(a == b);
}
