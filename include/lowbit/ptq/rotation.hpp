// rotation.hpp: ptq::Rotation, a seeded orthogonal matrix (randomized Hadamard or random orthogonal).
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/ptq/hadamard.hpp>
#include <lowbit/ptq/random_orthogonal.hpp>
#include <lowbit/ptq/seeded_random.hpp>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

namespace lowbit::ptq {

/// How a Rotation's matrix is made.
enum class RotationKind {
  hadamard,           ///< randomized Hadamard: diag(s)·H/√n, random signs s from the seed
  random_orthogonal,  ///< Haar-random orthogonal from the seed (random_orthogonal())
  custom,             ///< a caller's orthogonal matrix (Rotation::from_matrix)
};

inline std::string_view to_string(RotationKind k) {
  switch (k) {
    case RotationKind::hadamard: return "hadamard";
    case RotationKind::random_orthogonal: return "random_orthogonal";
    case RotationKind::custom: return "custom";
  }
  return "unknown";
}

/// Parses "hadamard", "random_orthogonal" (or "random") and "custom".
inline RotationKind parse_rotation_kind(std::string_view name) {
  if (name == "hadamard") return RotationKind::hadamard;
  if (name == "random_orthogonal" || name == "random") return RotationKind::random_orthogonal;
  if (name == "custom") return RotationKind::custom;
  lowbit::detail::fail("rotation kind: expected hadamard, random_orthogonal (random) or custom, got '{}'",
                       std::string(name));
}

/// max |QᵀQ − I|: 0 for an exactly orthogonal Q (square, finite).
inline double orthogonality_error(const Eigen::Ref<const Eigen::MatrixXd>& Q) {
  lowbit::detail::require(Q.rows() == Q.cols() && Q.rows() > 0, "Q: expected a square matrix, got {}x{}",
                          Q.rows(), Q.cols());
  lowbit::detail::require(Q.allFinite(), "Q: expected finite values");
  const Eigen::MatrixXd e = Q.transpose() * Q - Eigen::MatrixXd::Identity(Q.rows(), Q.cols());
  return e.cwiseAbs().maxCoeff();
}

/// An orthogonal n × n matrix Q, its kind and the seed it came from, applied to rows (x ← x·Q)
/// in double: the randomized Hadamard in O(n log n) per row, the others as a dense product.
/// The same (kind, n, seed) gives the same Q on every platform (see SeededRandom).
class Rotation {
 public:
  /// Q = diag(s)·H/√n with H = hadamard(n) and s_i = SeededRandom(seed).sign(), i = 0..n−1.
  /// Throws lowbit::Error when has_hadamard(n) is false.
  static Rotation randomized_hadamard(Index n, uint64_t seed) {
    lowbit::detail::require(n > 0, "n: expected > 0, got {}", n);
    lowbit::detail::require(has_hadamard(n),
                            "n: no Hadamard matrix of order {} (use random_orthogonal or automatic)", n);
    Rotation r(RotationKind::hadamard, n, seed);
    SeededRandom rng(seed);
    r.signs_.resize(n);
    for (Index i = 0; i < n; ++i) r.signs_(i) = rng.sign();
    r.scale_ = 1.0 / std::sqrt(double(n));
    return r;
  }
  /// Q = random_orthogonal(n, seed).
  static Rotation random_orthogonal(Index n, uint64_t seed) {
    Rotation r(RotationKind::random_orthogonal, n, seed);
    r.dense_ = ptq::random_orthogonal(n, seed);
    return r;
  }
  /// The randomized Hadamard where n allows one (has_hadamard), else the random orthogonal.
  static Rotation automatic(Index n, uint64_t seed) {
    return has_hadamard(n) ? randomized_hadamard(n, seed) : random_orthogonal(n, seed);
  }
  /// The rotation of `kind` (hadamard or random_orthogonal).
  static Rotation make(RotationKind kind, Index n, uint64_t seed) {
    lowbit::detail::require(kind != RotationKind::custom,
                            "kind: custom rotations come from Rotation::from_matrix");
    return kind == RotationKind::hadamard ? randomized_hadamard(n, seed) : random_orthogonal(n, seed);
  }
  /// A caller's matrix; throws unless it is square, finite and orthogonal within `tolerance`
  /// (max |QᵀQ − I|).
  static Rotation from_matrix(const Eigen::Ref<const Eigen::MatrixXd>& Q, double tolerance = 1e-9) {
    const double err = orthogonality_error(Q);
    lowbit::detail::require(err <= tolerance, "Q: not orthogonal: max |QᵀQ − I| = {} > {}", err,
                            tolerance);
    Rotation r(RotationKind::custom, Q.rows(), 0);
    r.dense_ = Q;
    return r;
  }

  RotationKind kind() const { return kind_; }
  uint64_t seed() const { return seed_; }
  Index size() const { return n_; }
  /// The random signs s of a randomized Hadamard (empty otherwise).
  const Eigen::VectorXd& signs() const { return signs_; }

  /// X ← X·Q for every row of X ([rows, size()]).
  void apply(Eigen::Ref<MatrixXdR> X) const { transform(X, false); }
  /// X ← X·Qᵀ (the inverse) for every row of X.
  void apply_transpose(Eigen::Ref<MatrixXdR> X) const { transform(X, true); }

  /// The dense Q.
  Eigen::MatrixXd matrix() const {
    if (kind_ != RotationKind::hadamard) return dense_;
    MatrixXdR q = MatrixXdR::Identity(n_, n_);
    apply(q);
    return q;
  }

 private:
  Rotation(RotationKind kind, Index n, uint64_t seed) : kind_(kind), n_(n), seed_(seed) {}

  void transform(Eigen::Ref<MatrixXdR> X, bool transpose) const {
    lowbit::detail::require(X.cols() == n_, "X: expected {} columns (the rotation's size), got {}x{}",
                            n_, X.rows(), X.cols());
    if (X.rows() == 0) return;
    if (kind_ == RotationKind::hadamard) {
      // x·D·H/√n, and x·(D·H)ᵀ/√n = (x·Hᵀ)·D/√n.
      const auto signs = signs_.transpose().array();
      if (!transpose) X.array().rowwise() *= signs;
      hadamard_transform_rows(X, transpose);
      if (transpose) X.array().rowwise() *= signs;
      X *= scale_;
      return;
    }
    if (transpose)
      X = X * dense_.transpose();
    else
      X = X * dense_;
  }

  RotationKind kind_ = RotationKind::custom;
  Index n_ = 0;
  uint64_t seed_ = 0;
  Eigen::VectorXd signs_;  // hadamard
  double scale_ = 1.0;     // hadamard: 1/√n
  Eigen::MatrixXd dense_;  // random_orthogonal, custom
};

}  // namespace lowbit::ptq
