// hadamard.hpp: Hadamard matrices (Sylvester, Paley I/II, Kronecker products) and the fast transform.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <optional>

namespace lowbit::ptq {

namespace detail {

/// (−1)^popcount(x): the Sylvester entry H_{2^k}(i, j) for x = i & j.
inline int sylvester_sign(uint64_t x) noexcept {
  int parity = 0;
  for (; x != 0; x &= x - 1) parity ^= 1;
  return parity ? -1 : 1;
}

inline bool is_prime(Index q) {
  if (q < 2) return false;
  for (Index d = 2; d * d <= q; ++d)
    if (q % d == 0) return false;
  return true;
}

/// Quadratic character of a mod the prime q: 0, 1 (a non-zero square) or -1.
inline int legendre(Index a, Index q) {
  a %= q;
  if (a < 0) a += q;
  if (a == 0) return 0;
  // Euler's criterion: a^((q-1)/2) mod q is 1 or q-1 (q fits 31 bits: products fit int64).
  int64_t r = 1, b = a, e = (q - 1) / 2;
  while (e > 0) {
    if (e & 1) r = r * b % q;
    b = b * b % q;
    e >>= 1;
  }
  return r == 1 ? 1 : -1;
}

/// The Paley construction a base order m uses: q + 1 (Paley I, q prime ≡ 3 mod 4) or 2(q + 1)
/// (Paley II, q prime ≡ 1 mod 4). m = 1 is the trivial [1].
struct PaleyBase {
  Index order = 1;
  Index q = 0;     ///< the prime (0 for order 1)
  bool type2 = false;
};

inline std::optional<PaleyBase> paley_base(Index m) {
  if (m == 1) return PaleyBase{};
  if (m >= 4 && m % 4 == 0 && is_prime(m - 1) && (m - 1) % 4 == 3) return PaleyBase{m, m - 1, false};
  if (m >= 12 && m % 4 == 0 && is_prime(m / 2 - 1) && (m / 2 - 1) % 4 == 1)
    return PaleyBase{m, m / 2 - 1, true};
  return std::nullopt;
}

/// How a Hadamard matrix of order n = core · 2^k is built: the dense core (a Paley matrix or [1])
/// Kronecker the Sylvester matrix of order 2^k. The smallest core is chosen (fastest transform).
struct HadamardPlan {
  PaleyBase core;
  int log2_sylvester = 0;
  Index n() const { return core.order << log2_sylvester; }
};

inline std::optional<HadamardPlan> hadamard_plan(Index n) {
  if (n < 1 || n > (Index(1) << 40)) return std::nullopt;
  int k = 0;
  while ((n >> k) % 2 == 0) ++k;
  for (; k >= 0; --k)  // largest power of two first: the smallest dense core
    if (const auto base = paley_base(n >> k)) return HadamardPlan{*base, k};
  return std::nullopt;
}

/// The Paley (or trivial) core matrix of `base`, entries ±1.
inline Eigen::MatrixXi paley_matrix(const PaleyBase& base) {
  const Index m = base.order, q = base.q;
  if (m == 1) return Eigen::MatrixXi::Ones(1, 1);
  // C = [[0, 1ᵀ], [±1, Q]] with the Jacobsthal matrix Q(i, j) = χ(j − i).
  Eigen::MatrixXi c = Eigen::MatrixXi::Zero(q + 1, q + 1);
  for (Index j = 1; j <= q; ++j) {
    c(0, j) = 1;
    c(j, 0) = base.type2 ? 1 : -1;
  }
  for (Index i = 0; i < q; ++i)
    for (Index j = 0; j < q; ++j) c(i + 1, j + 1) = legendre(j - i, q);
  if (!base.type2) return c + Eigen::MatrixXi::Identity(q + 1, q + 1);  // Paley I: I + C
  // Paley II: 0 -> [[1, -1], [-1, -1]], ±1 -> ±[[1, 1], [1, -1]].
  Eigen::MatrixXi h(m, m);
  for (Index i = 0; i <= q; ++i)
    for (Index j = 0; j <= q; ++j) {
      const int v = c(i, j);
      if (v == 0) {
        h(2 * i, 2 * j) = 1, h(2 * i, 2 * j + 1) = -1, h(2 * i + 1, 2 * j) = -1, h(2 * i + 1, 2 * j + 1) = -1;
      } else {
        h(2 * i, 2 * j) = v, h(2 * i, 2 * j + 1) = v, h(2 * i + 1, 2 * j) = v, h(2 * i + 1, 2 * j + 1) = -v;
      }
    }
  return h;
}

/// x ← x · H_{2^k} (Sylvester, unnormalised) for one contiguous vector of length 2^k; in place.
inline void fwht(double* x, Index len) noexcept {
  for (Index h = 1; h < len; h *= 2)
    for (Index i = 0; i < len; i += 2 * h)
      for (Index j = i; j < i + h; ++j) {
        const double a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
}

}  // namespace detail

/// Whether hadamard(n) can build a Hadamard matrix of order n: n = m · 2^k with m = 1, m = q + 1
/// (q prime ≡ 3 mod 4, Paley I: 4, 8, 12, 20, 24, 32, 44, 48, ...) or m = 2(q + 1) (q prime ≡ 1
/// mod 4, Paley II: 12, 28, 36, 60, ...). So every power of two, 12·2^k and 20·2^k, among others.
inline bool has_hadamard(Index n) { return detail::hadamard_plan(n).has_value(); }

/// The Hadamard matrix H of order n (entries ±1, H·Hᵀ = n·I): the Paley core of the smallest
/// order that divides n by a power of two, Kronecker the Sylvester matrix (H_{2^k}(i, j) =
/// (−1)^popcount(i & j)). Throws lowbit::Error when has_hadamard(n) is false.
inline Eigen::MatrixXi hadamard(Index n) {
  const auto plan = detail::hadamard_plan(n);
  lowbit::detail::require(plan.has_value(),
                          "n: no Hadamard matrix of order {} can be built (orders are m·2^k with m "
                          "= 1, a prime q ≡ 3 mod 4 plus 1, or twice a prime q ≡ 1 mod 4 plus 1)",
                          n);
  const Eigen::MatrixXi core = detail::paley_matrix(plan->core);
  const Index m = core.rows(), p = Index(1) << plan->log2_sylvester;
  Eigen::MatrixXi h(n, n);
  for (Index a = 0; a < m; ++a)
    for (Index c = 0; c < m; ++c)
      for (Index b = 0; b < p; ++b)
        for (Index d = 0; d < p; ++d)
          h(a * p + b, c * p + d) = core(a, c) * detail::sylvester_sign(uint64_t(b & d));
  return h;
}

/// x ← x · H (or x · Hᵀ with `transpose`) for every row x of X, H = hadamard(X.cols())
/// unnormalised, in O(n·(log n + m)) per row, m the dense core's order. Throws lowbit::Error when
/// has_hadamard(X.cols()) is false.
inline void hadamard_transform_rows(Eigen::Ref<MatrixXdR> X, bool transpose = false) {
  const Index n = X.cols();
  const auto plan = detail::hadamard_plan(n);
  lowbit::detail::require(plan.has_value(), "X: no Hadamard matrix of order {} (X's columns)", n);
  const Index p = Index(1) << plan->log2_sylvester, m = plan->core.order;
  Eigen::MatrixXd core = detail::paley_matrix(plan->core).cast<double>();
  if (transpose) core.transposeInPlace();  // (A ⊗ B)ᵀ = Aᵀ ⊗ B: the Sylvester B is symmetric
  Eigen::MatrixXd z(m, p);
  for (Index r = 0; r < X.rows(); ++r) {
    // x = vec(Z) with Z [m, p] row-major: x·(A ⊗ B) = vec(Aᵀ·Z·B), B the Sylvester matrix.
    double* row = &X(r, 0);
    for (Index a = 0; a < m; ++a) detail::fwht(row + a * p, p);
    if (m == 1) continue;
    for (Index a = 0; a < m; ++a)
      for (Index b = 0; b < p; ++b) z(a, b) = row[a * p + b];
    for (Index c = 0; c < m; ++c)
      for (Index b = 0; b < p; ++b) {
        double s = 0.0;
        for (Index a = 0; a < m; ++a) s += core(a, c) * z(a, b);
        row[c * p + b] = s;
      }
  }
}

}  // namespace lowbit::ptq
