// main.cpp: a consumer of the installed lowbit package.
#include <lowbit/lowbit.hpp>

#include <cstdio>

int main() {
  lowbit::MatrixXfR w = lowbit::MatrixXfR::Random(8, 64);
  const auto q = lowbit::quantize_weights<4>(w, lowbit::Scheme::per_group(4, 32));
  const double err = lowbit::max_abs_error(w, q.dequantize());
  std::printf("consumer: INT4 g32 max abs error %.4f, %.3f bits/weight\n", err, q.bits_per_weight());
  return err < 0.2 ? 0 : 1;
}
