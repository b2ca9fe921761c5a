// synthetic.hpp: a synthetic linear layer with LLM-like statistics for the PTQ tests.
#pragma once

#include <lowbit/core/types.hpp>
#include <lowbit/ptq/calibration.hpp>

#include <cmath>
#include <random>

namespace lowbit::test {

/// Heavy-tailed weights: Student-t with 4 degrees of freedom, times 0.02.
inline MatrixXfR heavy_tailed_weight(Index out, Index in, unsigned seed) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> t(4.0f);
  MatrixXfR w(out, in);
  for (Index i = 0; i < w.size(); ++i) w.data()[i] = 0.02f * t(rng);
  return w;
}

/// Activations as in LLMs: a shared low-rank component (rank `rank`, unit variance per channel)
/// plus isotropic noise of standard deviation `noise`, channel scales spread log-normally, and `outliers` channels 20x larger. The same `seed` gives the same
/// distribution; `sample` selects independent tokens from it (calibration vs held-out).
struct ActivationModel {
  MatrixXfR mixing;            // rank x in
  Eigen::RowVectorXf channel;  // per-channel scale
  float noise = 0.5f;

  ActivationModel(Index in, Index rank, int outliers, unsigned seed) : mixing(rank, in), channel(in) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n01(0.0f, 1.0f);
    for (Index i = 0; i < mixing.size(); ++i) mixing.data()[i] = n01(rng) / std::sqrt(float(rank));
    for (Index j = 0; j < in; ++j) channel[j] = std::exp(0.5f * n01(rng));
    std::uniform_int_distribution<Index> pick(0, in - 1);
    for (int k = 0; k < outliers; ++k) channel[pick(rng)] *= 20.0f;
  }

  MatrixXfR sample(Index tokens, unsigned seed) const {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n01(0.0f, 1.0f);
    MatrixXfR z(tokens, mixing.rows()), e(tokens, mixing.cols());
    for (Index i = 0; i < z.size(); ++i) z.data()[i] = n01(rng);
    for (Index i = 0; i < e.size(); ++i) e.data()[i] = noise * n01(rng);
    MatrixXfR x = z * mixing + e;
    return x.array().rowwise() * channel.array();
  }
};

/// The synthetic LLM-like layer the PTQ tests share: a heavy-tailed 256 x 512 weight, 2048
/// calibration and 2048 held-out tokens from the activation model (noise 0.5, 4 outlier channels)
/// and their calibration statistics.
constexpr Index kOut = 256, kIn = 512;

struct SyntheticLayer {
  MatrixXfR W = heavy_tailed_weight(kOut, kIn, 101);
  ActivationModel model{kIn, 32, 4, 102};
  MatrixXfR X_cal = model.sample(2048, 103);
  MatrixXfR X_held = model.sample(2048, 104);
  ptq::Calibration cal = ptq::detail::calibrate(X_cal, kIn);
  ptq::Calibration held = ptq::detail::calibrate(X_held, kIn);
};

/// The layer, built once per program.
inline const SyntheticLayer& layer() {
  static const SyntheticLayer l;
  return l;
}

}  // namespace lowbit::test
