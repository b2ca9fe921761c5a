// random_orthogonal.hpp: a seeded Haar-random orthogonal matrix (QR of a Gaussian with sign fix).
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/ptq/seeded_random.hpp>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <vector>

namespace lowbit::ptq {

/// A rows × cols matrix of standard normal draws of SeededRandom(seed), filled row by row.
inline Eigen::MatrixXd gaussian_matrix(Index rows, Index cols, uint64_t seed) {
  lowbit::detail::require(rows > 0 && cols > 0, "rows, cols: expected > 0, got {} x {}", rows, cols);
  SeededRandom rng(seed);
  Eigen::MatrixXd g(rows, cols);
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) g(r, c) = rng.gaussian();
  return g;
}

/// The n × n orthogonal Q of the QR factorisation G = Q·R of gaussian_matrix(n, n, seed) with
/// R's diagonal made positive (Q ← Q·diag(sign(diag R))), which makes Q Haar-distributed
/// (Mezzadri 2007) and unique. Householder QR in double with plain loops in a fixed order, so
/// the result depends only on the seed (and the libm, see SeededRandom). O(n³): for widths with
/// a Hadamard matrix prefer the randomized Hadamard (see rotation.hpp).
inline Eigen::MatrixXd random_orthogonal(Index n, uint64_t seed) {
  lowbit::detail::require(n > 0 && n <= 65536, "n: expected 1..65536, got {}", n);
  Eigen::MatrixXd a = gaussian_matrix(n, n, seed);  // column-major: columns are contiguous
  std::vector<Eigen::VectorXd> reflectors(static_cast<size_t>(n));
  std::vector<double> beta(static_cast<size_t>(n), 0.0);  // H_k = I − beta_k·v_k·v_kᵀ on rows k..n−1
  Eigen::VectorXd r_diag(n);
  for (Index k = 0; k < n; ++k) {
    const Index len = n - k;
    double norm2 = 0.0;
    for (Index i = k; i < n; ++i) norm2 += a(i, k) * a(i, k);
    const double norm = std::sqrt(norm2);
    const double alpha = a(k, k) >= 0.0 ? -norm : norm;  // R(k, k); v = x − alpha·e1, no cancellation
    Eigen::VectorXd v = a.col(k).tail(len);
    v(0) -= alpha;
    double vv = 0.0;
    for (Index i = 0; i < len; ++i) vv += v(i) * v(i);
    r_diag(k) = alpha;
    if (vv > 0.0) {
      beta[size_t(k)] = 2.0 / vv;
      for (Index j = k + 1; j < n; ++j) {
        double d = 0.0;
        for (Index i = 0; i < len; ++i) d += v(i) * a(k + i, j);
        d *= beta[size_t(k)];
        for (Index i = 0; i < len; ++i) a(k + i, j) -= d * v(i);
      }
    }
    reflectors[size_t(k)] = std::move(v);
  }
  // Q = H_0·H_1·…·H_{n−1}, applied to I from the last reflector back.
  Eigen::MatrixXd q = Eigen::MatrixXd::Identity(n, n);
  for (Index k = n - 1; k >= 0; --k) {
    if (beta[size_t(k)] == 0.0) continue;
    const Eigen::VectorXd& v = reflectors[size_t(k)];
    const Index len = n - k;
    for (Index j = k; j < n; ++j) {  // columns < k of H_k·(H_{k+1}…) are still e_j
      double d = 0.0;
      for (Index i = 0; i < len; ++i) d += v(i) * q(k + i, j);
      d *= beta[size_t(k)];
      for (Index i = 0; i < len; ++i) q(k + i, j) -= d * v(i);
    }
  }
  for (Index k = 0; k < n; ++k)
    if (r_diag(k) < 0.0) q.col(k) = -q.col(k);
  return q;
}

}  // namespace lowbit::ptq
