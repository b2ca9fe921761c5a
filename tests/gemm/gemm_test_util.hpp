// gemm_test_util.hpp: random quantized weights and activations shared by the gemm tests.
#pragma once

#include <lowbit/gemm/reference.hpp>
#include <lowbit/lowbit.hpp>

#include <random>

namespace lowbit::test {

enum class Codes { random, extreme };

/// A random QuantizedMatrix<Bits> as its scheme allows; extreme codes are qmin/qmax only, with
/// zero points at the ends of the range too.
template <int Bits>
QuantizedMatrix<Bits> random_weights(Index N, Index K, Scheme s, std::mt19937& rng,
                                     Codes codes = Codes::random, bool unit_scales = false) {
  s.bits = Bits;
  const int qmin = s.qmin(), qmax = s.qmax();
  std::uniform_int_distribution<int> code(qmin, qmax), coin(0, 1);
  std::uniform_real_distribution<float> scale(0.001f, 0.05f);
  MatrixXiR q(N, K);
  for (Index n = 0; n < N; ++n)
    for (Index k = 0; k < K; ++k)
      q(n, k) = codes == Codes::extreme ? (coin(rng) ? qmin : qmax) : code(rng);
  const auto np = size_t(param_count(s, N, K));
  QuantParams p{s, std::vector<float>(np), std::vector<int32_t>(np, 0)};
  for (size_t i = 0; i < np; ++i) {
    p.scale[i] = unit_scales ? 1.0f : scale(rng);
    if (!s.symmetric) p.zero_point[i] = codes == Codes::extreme ? (coin(rng) ? qmin : qmax) : code(rng);
  }
  return QuantizedMatrix<Bits>(q, p);
}

/// Packs random weights of a run-time bit width; `dequant` receives the float matrix they stand for.
inline PackedWeights random_packed(int bits, Index N, Index K, Scheme s, std::mt19937& rng,
                                   Codes codes = Codes::random, MatrixXfR* dequant = nullptr,
                                   bool unit_scales = false) {
  auto go = [&](auto tag) {
    constexpr int B = decltype(tag)::value;
    const auto w = random_weights<B>(N, K, s, rng, codes, unit_scales);
    if (dequant) *dequant = w.dequantize();
    return pack_weights(w);
  };
  switch (bits) {
    case 2: return go(std::integral_constant<int, 2>{});
    case 3: return go(std::integral_constant<int, 3>{});
    case 4: return go(std::integral_constant<int, 4>{});
    case 5: return go(std::integral_constant<int, 5>{});
    case 6: return go(std::integral_constant<int, 6>{});
    case 7: return go(std::integral_constant<int, 7>{});
    default: return go(std::integral_constant<int, 8>{});
  }
}

/// Random activations; extreme rows hold only +-amax (and, asymmetric, the ends of the range).
inline MatrixXfR random_x(Index M, Index K, std::mt19937& rng, Codes codes = Codes::random) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> coin(0, 1);
  MatrixXfR x(M, K);
  for (Index m = 0; m < M; ++m)
    for (Index k = 0; k < K; ++k)
      x(m, k) = codes == Codes::extreme ? (coin(rng) ? 3.0f : -3.0f) + float(m % 3) : normal(rng);
  return x;
}

/// The reference result of linear(), epilogue included.
inline MatrixXfR reference_linear(const MatrixXfR& x, const PackedWeights& w, const LinearOptions& opt) {
  MatrixXfR y(x.rows(), w.rows());
  if (opt.activations == ActivationQuant::float32) {
    kernels::reference::linear_f32(x.data(), x.rows(), x.cols(), w, y.data(), y.cols(), 0, w.rows());
  } else {
    detail::QuantizedActivations a;
    detail::quantize_activations(x.data(), x.rows(), x.cols(), x.cols(), w, opt.activations, a);
    kernels::reference::linear_int(a, w, y.data(), y.cols(), 0, w.rows());
  }
  for (Index m = 0; m < y.rows(); ++m) detail::apply_epilogue(&y(m, 0), 0, y.cols(), opt.epilogue);
  return y;
}

}  // namespace lowbit::test
