// quantize_weights.cpp: quantizes an LLM-shaped weight matrix at INT8/INT4/INT2 and prints the
// storage and error of each scheme.
#include <lowbit/core/metrics.hpp>
#include <lowbit/core/quantized_matrix.hpp>
#include <lowbit/core/scheme.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <random>
#include <string>

namespace {

// Heavy-tailed weights (Student-t, 4 degrees of freedom) with a few outlier input channels whose
// columns are 8x larger, as trained LLM projection matrices show.
lowbit::MatrixXfR llm_like_weight(lowbit::Index rows, lowbit::Index cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> t(4.0f);
  lowbit::MatrixXfR w(rows, cols);
  for (lowbit::Index i = 0; i < w.size(); ++i) w.data()[i] = 0.02f * t(rng);
  std::uniform_int_distribution<lowbit::Index> pick(0, cols - 1);
  for (int k = 0; k < 8; ++k) w.col(pick(rng)) *= 8.0f;
  return w;
}

template <int Bits>
void report(const std::string& name, const lowbit::MatrixXfR& w, const lowbit::Scheme& scheme) {
  const auto q = lowbit::quantize_weights<Bits>(w, scheme);
  const lowbit::MatrixXfR w_hat = q.dequantize();
  const double fp32_bytes = 4.0 * double(w.size());
  fmt::print("{:<22} {:>9.3f} {:>10.2f}x {:>12.3e} {:>10.2f} {:>12.3e}\n", name,
             q.bits_per_weight(), fp32_bytes / double(q.bytes()), lowbit::mse(w, w_hat),
             lowbit::sqnr_db(w, w_hat), lowbit::max_abs_error(w, w_hat));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Quantize an LLM-shaped weight matrix with each lowbit scheme"};
  lowbit::Index rows = 4096, cols = 4096;
  unsigned seed = 42;
  app.add_option("--rows", rows, "output features")->check(CLI::PositiveNumber);
  app.add_option("--cols", cols, "input features")->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "random seed");
  CLI11_PARSE(app, argc, argv);

  const lowbit::MatrixXfR w = llm_like_weight(rows, cols, seed);
  fmt::print("weight {}x{}: Student-t(4) x 0.02 with 8 outlier input channels (x8), seed {}\n\n",
             rows, cols, seed);
  fmt::print("{:<22} {:>9} {:>11} {:>12} {:>10} {:>12}\n", "scheme", "bits/w", "vs FP32", "MSE",
             "SQNR dB", "max |err|");
  using lowbit::Scheme;
  report<8>("int8 per-channel sym", w, Scheme::per_channel(8));
  report<8>("int8 per-channel asym", w, Scheme::per_channel(8, false));
  report<4>("int4 g128 sym", w, Scheme::per_group(4, 128));
  report<4>("int4 g128 asym", w, Scheme::per_group(4, 128, false));
  report<4>("int4 g32 sym", w, Scheme::per_group(4, 32));
  report<4>("int4 g32 asym", w, Scheme::per_group(4, 32, false));
  report<2>("int2 g32 sym", w, Scheme::per_group(2, 32));
  report<2>("int2 g32 asym", w, Scheme::per_group(2, 32, false));
  fmt::print("\nbits/w counts codes, float32 scales and 1-byte zero points (asymmetric).\n");
  return 0;
}
