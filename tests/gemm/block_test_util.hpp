// block_test_util.hpp: GGUF's block formats in BlockWeights' code form, random and extreme, for the gemm tests.
#pragma once

#include <lowbit/gemm/reference.hpp>
#include <lowbit/lowbit.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace lowbit::test {

/// One GGUF format as BlockWeights sees it (see the table in gemm/block_weights.hpp).
struct BlockFormat {
  const char* name;
  int bits, zero;
  Index super_block, sub_block;
  bool offset;
  bool has_sc;
  int sc_lo, sc_hi;
  bool has_mn;
  int mn_lo, mn_hi;
};

inline const std::vector<BlockFormat>& block_formats() {
  static const std::vector<BlockFormat> f = {
      {"Q8_0", 8, 128, 32, 32, false, false, 1, 1, false, 0, 0},
      {"Q4_0", 4, 8, 32, 32, false, false, 1, 1, false, 0, 0},
      {"Q4_1", 4, 0, 32, 32, true, false, 1, 1, false, 0, 0},
      {"Q5_0", 5, 16, 32, 32, false, false, 1, 1, false, 0, 0},
      {"Q5_1", 5, 0, 32, 32, true, false, 1, 1, false, 0, 0},
      {"Q2_K", 2, 0, 256, 16, true, true, 0, 15, true, 0, 15},
      {"Q3_K", 3, 4, 256, 16, false, true, -32, 31, false, 0, 0},
      {"Q4_K", 4, 0, 256, 32, true, true, 0, 63, true, 0, 63},
      {"Q5_K", 5, 0, 256, 32, true, true, 0, 63, true, 0, 63},
      {"Q6_K", 6, 32, 256, 16, false, true, -128, 127, false, 0, 0},
  };
  return f;
}

inline const BlockFormat& block_format(const std::string& name) {
  for (const BlockFormat& f : block_formats())
    if (name == f.name) return f;
  return block_formats().front();
}

/// How codes (and sub-scales) are drawn: random, all at the top or the bottom of their range, or
/// alternating between the two ends.
enum class Fill { random, max, min, alternating };

/// Round-to-nearest binary16 bits of a float (|x| below 65504; subnormal results allowed).
inline uint16_t half_bits(float x) {
  const uint32_t sign = std::signbit(x) ? 0x8000u : 0u;
  const double a = std::fabs(double(x));
  if (a == 0.0) return uint16_t(sign);
  int e;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
  int exp = e - 1;    // a = 1.xxx * 2^exp
  if (exp < -14) {    // subnormal: multiples of 2^-24
    const auto m = uint32_t(std::nearbyint(a * 16777216.0));
    return uint16_t(sign | m);  // m == 1024 rolls into the smallest normal, as it should
  }
  auto m = uint32_t(std::nearbyint(std::ldexp(a, 10 - exp)));  // 1024 .. 2048
  if (m == 2048) {
    m = 1024;
    ++exp;
  }
  return uint16_t(sign | uint32_t(exp + 15) << 10 | (m - 1024));
}

/// Random block weights of format f; `codes` and `scales` choose extreme patterns; with
/// `odd_halves` some d/m are subnormal, zero or the largest half.
inline BlockWeights random_blocks(const BlockFormat& f, Index N, Index K, std::mt19937& rng, Fill codes = Fill::random,
                                  Fill scales = Fill::random, bool odd_halves = false) {
  BlockWeights w;
  w.rows = N;
  w.cols = K;
  w.bits = f.bits;
  w.zero = f.zero;
  w.super_block = f.super_block;
  w.sub_block = f.sub_block;
  w.offset = f.offset;
  const int umax = (1 << f.bits) - 1;
  std::uniform_int_distribution<int> code(0, umax), coin(0, 1), pick(0, 9);
  std::uniform_real_distribution<float> scale(0.001f, 0.05f);
  auto draw = [&](Fill fill, int lo, int hi, size_t i) {
    switch (fill) {
      case Fill::max: return hi;
      case Fill::min: return lo;
      case Fill::alternating: return i % 2 ? lo : hi;
      default: return std::uniform_int_distribution<int>(lo, hi)(rng);
    }
  };
  w.codes.resize(size_t(N * K));
  for (size_t i = 0; i < w.codes.size(); ++i) w.codes[i] = uint8_t(draw(codes, 0, umax, i));
  (void)code;
  auto half = [&](bool negative) {
    if (odd_halves) {
      switch (pick(rng)) {
        case 0: return uint16_t(negative ? 0x8001u : 0x0001u);  // smallest subnormal
        case 1: return uint16_t(negative ? 0x83FFu : 0x03FFu);  // largest subnormal
        case 2: return uint16_t(0);
        case 3: return uint16_t(negative ? 0xFBFFu : 0x7BFFu);  // 65504
        default: break;
      }
    }
    const float v = scale(rng);
    return half_bits(negative ? -v : v);
  };
  const size_t nsup = size_t(N * (K / f.super_block)), nsub = size_t(N * (K / f.sub_block));
  w.d.resize(nsup);
  for (auto& h : w.d) h = half(false);
  if (f.offset) {
    w.m.resize(nsup);
    for (auto& h : w.m) h = half(f.has_mn || coin(rng));  // K-quants: m = -dmin
  }
  if (f.has_sc) {
    w.sc.resize(nsub);
    for (size_t i = 0; i < nsub; ++i) w.sc[i] = int16_t(draw(scales, f.sc_lo, f.sc_hi, i));
  }
  if (f.has_mn) {
    w.mn.resize(nsub);
    for (size_t i = 0; i < nsub; ++i) w.mn[i] = int16_t(draw(scales, f.mn_lo, f.mn_hi, i + 1));
  }
  return w;
}

/// W[n][k] of the code form, in double (exact: every factor is a short binary fraction).
inline double block_value(const BlockWeights& w, Index n, Index k) {
  const Index s = k / w.super_block, j = k / w.sub_block;
  const double d = double(detail::half_bits_to_float(w.d[size_t(n * (w.cols / w.super_block) + s)]));
  const double sc = w.sc.empty() ? 1.0 : double(w.sc[size_t(n * (w.cols / w.sub_block) + j)]);
  double v = d * sc * double(int(w.codes[size_t(n * w.cols + k)]) - w.zero);
  if (w.offset) {
    const double m = double(detail::half_bits_to_float(w.m[size_t(n * (w.cols / w.super_block) + s)]));
    const double mn = w.mn.empty() ? 1.0 : double(w.mn[size_t(n * (w.cols / w.sub_block) + j)]);
    v += m * mn;
  }
  return v;
}

/// Activations for the block kernels: standard normal, or (extreme) ±3 plus a row offset, which
/// drives int8 activation codes to their ends.
inline MatrixXfR block_x(Index M, Index K, std::mt19937& rng, bool extreme) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> coin(0, 1);
  MatrixXfR x(M, K);
  for (Index m = 0; m < M; ++m)
    for (Index k = 0; k < K; ++k)
      x(m, k) = extreme ? (coin(rng) ? 3.0f : -3.0f) + float(m % 3) : normal(rng);
  return x;
}

/// The reference result of linear() for block weights, epilogue included.
inline MatrixXfR reference_block_linear(const MatrixXfR& x, const PackedWeights& w, const LinearOptions& opt) {
  MatrixXfR y(x.rows(), w.rows());
  if (opt.activations == ActivationQuant::float32) {
    kernels::reference::linear_block_f32(x.data(), x.rows(), x.cols(), w, y.data(), y.cols(), 0, w.rows());
  } else {
    detail::QuantizedActivations a;
    detail::quantize_activations(x.data(), x.rows(), x.cols(), x.cols(), w, opt.activations, a);
    kernels::reference::linear_block_int(a, w, y.data(), y.cols(), 0, w.rows());
  }
  for (Index m = 0; m < y.rows(); ++m) detail::apply_epilogue(&y(m, 0), 0, y.cols(), opt.epilogue);
  return y;
}

}  // namespace lowbit::test
