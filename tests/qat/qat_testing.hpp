// qat_testing.hpp: shared helpers and names of the qat tests (seeded random matrices).
#pragma once

#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/scheme.hpp>
#include <lowbit/core/types.hpp>

#include <random>

namespace qat_testing {

/// rows x cols of N(mean, sd^2) from a fixed seed.
inline lowbit::MatrixXfR random_matrix(lowbit::Index rows, lowbit::Index cols, unsigned seed,
                                       float sd = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(mean, sd);
  lowbit::MatrixXfR x(rows, cols);
  for (lowbit::Index i = 0; i < x.size(); ++i) x.data()[i] = n(rng);
  return x;
}

}  // namespace qat_testing

using lowbit::Index;
using lowbit::MatrixXfR;
using lowbit::QuantParams;
using lowbit::Scheme;
namespace qat = lowbit::qat;
using qat_testing::random_matrix;
