// odr_b.cpp: second translation unit of the ODR check.
#include <lowbit/lowbit.hpp>

lowbit::MatrixXfR odr_roundtrip_b(const lowbit::MatrixXfR& x) {
  return lowbit::quantize_weights<8>(x, lowbit::Scheme::per_channel(8)).dequantize();
}
