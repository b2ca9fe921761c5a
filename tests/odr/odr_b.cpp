// odr_b.cpp: second translation unit of the ODR check.
#include <lowbit/lowbit.hpp>

#include <vector>

lowbit::MatrixXfR odr_roundtrip_b(const lowbit::MatrixXfR& x) {
  return lowbit::quantize_weights<8>(x, lowbit::Scheme::per_channel(8)).dequantize();
}

lowbit::MatrixXfR odr_decode_b(lowbit::formats::Type type, const std::vector<uint8_t>& blocks,
                               lowbit::Index rows, lowbit::Index cols) {
  return lowbit::formats::decode_matrix(type, blocks.data(), rows, cols);
}
