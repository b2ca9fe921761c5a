// test_rotation.cpp: Hadamard constructions, the seeded generator, random orthogonal matrices,
// ptq::Rotation and the folding operations, against dense products and independent references.
#include <lowbit/ptq/fold.hpp>
#include <lowbit/ptq/hadamard.hpp>
#include <lowbit/ptq/random_orthogonal.hpp>
#include <lowbit/ptq/rotation.hpp>
#include <lowbit/ptq/seeded_random.hpp>

#include <Eigen/QR>
#include <catch2/catch.hpp>

#include <limits>
#include <vector>

using namespace lowbit;
using namespace lowbit::ptq;

namespace {

MatrixXfR random_matrix(Index r, Index c, uint64_t seed) {
  SeededRandom rng(seed);
  MatrixXfR m(r, c);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = float(rng.gaussian());
  return m;
}

// max |QfᵀQf − I| of Q rounded to float, accumulated in double.
double float_orthogonality_error(const Eigen::MatrixXd& q) {
  return orthogonality_error(q.cast<float>().cast<double>());
}

}  // namespace

TEST_CASE("hadamard: the orders the constructions reach, H·Hᵀ = n·I exactly") {
  // Worked out by hand: m·2^k with m = 1, q + 1 (q ≡ 3 mod 4 prime) or 2(q + 1) (q ≡ 1 mod 4 prime).
  // 52 = 4·13 needs Paley II of q = 25 (a prime power, not built) and is the one multiple of 4 missing.
  const std::vector<Index> want = {1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 56, 60, 64};
  std::vector<Index> got;
  for (Index n = 1; n <= 64; ++n)
    if (has_hadamard(n)) got.push_back(n);
  CHECK(got == want);
  for (Index n : {3, 5, 6, 10, 52, 100, 172, 0, -4}) CHECK_FALSE(has_hadamard(n));
  for (Index n : {12 * 16, 20 * 8, 28 * 4, 36, 44, 60, 76, 84, 108, 200, 256, 3200}) CHECK(has_hadamard(n));

  for (Index n = 1; n <= 256; ++n) {
    if (!has_hadamard(n)) continue;
    const Eigen::MatrixXi h = hadamard(n);
    INFO("n = " << n);
    REQUIRE(h.rows() == n);
    CHECK((h.array().abs() == 1).all());
    CHECK(h * h.transpose() == n * Eigen::MatrixXi::Identity(n, n));
  }
  // Sylvester by hand.
  Eigen::MatrixXi h4(4, 4);
  h4 << 1, 1, 1, 1, 1, -1, 1, -1, 1, 1, -1, -1, 1, -1, -1, 1;
  CHECK(hadamard(4) == h4);
  CHECK(hadamard(1) == Eigen::MatrixXi::Ones(1, 1));
}

TEST_CASE("hadamard: the fast transform equals the dense product, H and Hᵀ") {
  for (Index n : {1, 2, 8, 12, 20, 24, 28, 40, 44, 64, 72}) {
    INFO("n = " << n);
    const MatrixXdR x = random_matrix(5, n, uint64_t(n)).cast<double>();
    const Eigen::MatrixXd h = hadamard(n).cast<double>();
    MatrixXdR y = x;
    hadamard_transform_rows(y);
    CHECK((y - x * h).cwiseAbs().maxCoeff() < 1e-12 * double(n));
    MatrixXdR yt = x;
    hadamard_transform_rows(yt, true);
    CHECK((yt - x * h.transpose()).cwiseAbs().maxCoeff() < 1e-12 * double(n));
  }
  MatrixXdR bad(2, 52);
  CHECK_THROWS_AS(hadamard_transform_rows(bad), Error);
  CHECK_THROWS_AS(hadamard(52), Error);
  CHECK_THROWS_AS(hadamard(0), Error);
}

TEST_CASE("seeded random: splitmix64, uniforms, Box-Muller against an independent computation") {
  // splitmix64 from state 0 (Vigna's published sequence) and from 1234567.
  SeededRandom a(0);
  CHECK(a.next_u64() == 0xe220a8397b1dcdafull);
  CHECK(a.next_u64() == 0x6e789e6aa1b965f4ull);
  CHECK(a.next_u64() == 0x06c45d188009454full);
  SeededRandom b(1234567);
  CHECK(b.next_u64() == 0x599ed017fb08fc85ull);
  CHECK(b.next_u64() == 0x2c73f08458540fa5ull);
  // Gaussians of seed 42 and signs of seed 7, computed independently (Python, same formulas).
  SeededRandom g(42);
  const double want[] = {0.41471975043153003, 0.652681222151943, -0.8918862136277573, 1.3268335628141055};
  for (double w : want) CHECK(g.gaussian() == Approx(w).epsilon(1e-15));
  SeededRandom s(7);
  const double signs[] = {1, 1, -1, -1, 1, 1, 1, 1};
  for (double w : signs) CHECK(s.sign() == w);
  // Uniforms stay in (0, 1]; moments of many Gaussians.
  SeededRandom u(3);
  double sum = 0, sum2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double x = u.uniform();
    REQUIRE(x > 0.0);
    REQUIRE(x <= 1.0);
    const double z = g.gaussian();
    sum += z;
    sum2 += z * z;
  }
  CHECK(std::abs(sum / n) < 0.01);
  CHECK(std::abs(sum2 / n - 1.0) < 0.02);
  CHECK(derive_seed(5, 0) != derive_seed(5, 1));
  CHECK(derive_seed(5, 0) != derive_seed(6, 0));
  CHECK(derive_seed(5, 3) == derive_seed(5, 3));
}

TEST_CASE("random orthogonal: orthogonal to double and to fp32 precision, the unique QR with R > 0") {
  for (Index n : {1, 2, 3, 7, 17, 64, 100, 172}) {
    INFO("n = " << n);
    const Eigen::MatrixXd q = random_orthogonal(n, 99);
    CHECK(orthogonality_error(q) < 1e-13);
    // Rounded to float: within a few float ulps (2^-24 ≈ 6e-8) per entry of QᵀQ.
    CHECK(float_orthogonality_error(q) < 4e-7);
    // An independent QR (Eigen's Householder) of the same Gaussian, signs fixed so R's diagonal
    // is positive, gives the same Q; and R = QᵀG is upper triangular with a positive diagonal.
    const Eigen::MatrixXd g = gaussian_matrix(n, n, 99);
    const Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
    Eigen::MatrixXd q2 = qr.householderQ() * Eigen::MatrixXd::Identity(n, n);
    const Eigen::MatrixXd r2 = qr.matrixQR().triangularView<Eigen::Upper>();
    for (Index k = 0; k < n; ++k)
      if (r2(k, k) < 0) q2.col(k) = -q2.col(k);
    CHECK((q - q2).cwiseAbs().maxCoeff() < 1e-10);
    const Eigen::MatrixXd r = q.transpose() * g;
    CHECK(r.triangularView<Eigen::StrictlyLower>().toDenseMatrix().cwiseAbs().maxCoeff() < 1e-10);
    CHECK(r.diagonal().minCoeff() > 0.0);
  }
  CHECK(random_orthogonal(16, 5) == random_orthogonal(16, 5));
  CHECK((random_orthogonal(16, 5) - random_orthogonal(16, 6)).cwiseAbs().maxCoeff() > 0.1);
  CHECK_THROWS_AS(random_orthogonal(0, 1), Error);
  CHECK_THROWS_AS(gaussian_matrix(0, 3, 1), Error);
}

TEST_CASE("rotation: randomized Hadamard and random orthogonal, apply and its inverse") {
  for (Index n : {1, 4, 12, 20, 24, 40, 64, 3, 52, 172}) {
    INFO("n = " << n);
    const Rotation r = Rotation::automatic(n, 2024);
    CHECK(r.kind() == (has_hadamard(n) ? RotationKind::hadamard : RotationKind::random_orthogonal));
    CHECK(r.seed() == 2024);
    CHECK(r.size() == n);
    const Eigen::MatrixXd q = r.matrix();
    CHECK(orthogonality_error(q) < 1e-13);
    CHECK(float_orthogonality_error(q) < 4e-7);
    if (r.kind() == RotationKind::hadamard) {
      // diag(s)·H/√n from the dense Hadamard and the seed's signs.
      SeededRandom rng(2024);
      Eigen::VectorXd s(n);
      for (Index i = 0; i < n; ++i) s(i) = rng.sign();
      CHECK(r.signs() == s);
      const Eigen::MatrixXd want = s.asDiagonal() * hadamard(n).cast<double>() / std::sqrt(double(n));
      CHECK((q - want).cwiseAbs().maxCoeff() < 1e-15);
    }
    const MatrixXdR x = random_matrix(3, n, 8).cast<double>();
    MatrixXdR y = x;
    r.apply(y);
    CHECK((y - x * q).cwiseAbs().maxCoeff() < 1e-12);
    r.apply_transpose(y);  // back
    CHECK((y - x).cwiseAbs().maxCoeff() < 1e-12);
    MatrixXdR wrong(2, n + 1);
    CHECK_THROWS_AS(r.apply(wrong), Error);
  }
  // Sylvester widths of powers of 4 have exact entries ±1/2^k.
  const Eigen::MatrixXd q64 = Rotation::randomized_hadamard(64, 1).matrix();
  CHECK((q64.array().abs() == 0.125).all());
  CHECK(Rotation::randomized_hadamard(64, 1).matrix() != Rotation::randomized_hadamard(64, 2).matrix());
  CHECK(Rotation::make(RotationKind::random_orthogonal, 64, 3).kind() == RotationKind::random_orthogonal);
  CHECK(Rotation::make(RotationKind::hadamard, 64, 3).kind() == RotationKind::hadamard);
  const Rotation c = Rotation::from_matrix(random_orthogonal(5, 1));
  CHECK(c.kind() == RotationKind::custom);
  CHECK(c.matrix() == random_orthogonal(5, 1));
  CHECK(parse_rotation_kind("random") == RotationKind::random_orthogonal);
  CHECK(parse_rotation_kind(to_string(RotationKind::hadamard)) == RotationKind::hadamard);

  CHECK_THROWS_AS(Rotation::randomized_hadamard(52, 1), Error);
  CHECK_THROWS_AS(Rotation::randomized_hadamard(0, 1), Error);
  CHECK_THROWS_AS(Rotation::random_orthogonal(0, 1), Error);
  CHECK_THROWS_AS(Rotation::make(RotationKind::custom, 4, 1), Error);
  CHECK_THROWS_AS(Rotation::from_matrix(Eigen::MatrixXd::Ones(3, 3)), Error);
  CHECK_THROWS_AS(Rotation::from_matrix(Eigen::MatrixXd::Identity(3, 4)), Error);
  Eigen::MatrixXd nan = Eigen::MatrixXd::Identity(3, 3);
  nan(1, 2) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(Rotation::from_matrix(nan), Error);
  CHECK_THROWS_AS(orthogonality_error(Eigen::MatrixXd(0, 0)), Error);
  CHECK_THROWS_AS(parse_rotation_kind("givens"), Error);
}

TEST_CASE("fold: W·diag(s), W·Q, Qᵀ·W and block-diagonal rotations match dense double products") {
  const MatrixXfR W = random_matrix(40, 24, 1);  // [out, in]
  Eigen::VectorXf s(24);
  for (Index j = 0; j < 24; ++j) s(j) = 0.5f + 0.1f * float(j);
  const MatrixXfR ws = scale_columns(W, s);
  for (Index i = 0; i < W.rows(); ++i)
    for (Index j = 0; j < W.cols(); ++j) REQUIRE(ws(i, j) == W(i, j) * s(j));

  for (const Rotation& q : {Rotation::randomized_hadamard(24, 3), Rotation::random_orthogonal(24, 3)}) {
    const Eigen::MatrixXd Q = q.matrix();
    const MatrixXfR wq = rotate_input(W, q);  // [40, 24]
    const Eigen::MatrixXd want_in = W.cast<double>() * Q;
    CHECK((wq.cast<double>() - want_in).cwiseAbs().maxCoeff() < 1e-6);
    // The Linear reading x·Q gives x·Wᵀ.
    const MatrixXfR x = random_matrix(6, 24, 2);
    const Eigen::MatrixXd y = x.cast<double>() * W.cast<double>().transpose();
    const Eigen::MatrixXd y_rot = (x.cast<double>() * Q) * wq.cast<double>().transpose();
    CHECK((y - y_rot).cwiseAbs().maxCoeff() < 1e-5 * y.cwiseAbs().maxCoeff());

    const MatrixXfR Wt = random_matrix(24, 40, 4);  // a Linear writing 24 outputs
    const MatrixXfR qw = rotate_output(Wt, q);
    const Eigen::MatrixXd want_out = Q.transpose() * Wt.cast<double>();
    CHECK((qw.cast<double>() - want_out).cwiseAbs().maxCoeff() < 1e-6);
    // Its outputs are y·Q.
    const MatrixXfR x2 = random_matrix(6, 40, 5);
    const Eigen::MatrixXd y2 = (x2.cast<double>() * Wt.cast<double>().transpose()) * Q;
    CHECK((x2.cast<double>() * qw.cast<double>().transpose() - y2).cwiseAbs().maxCoeff() <
          1e-5 * y2.cwiseAbs().maxCoeff());
  }
  // More rows than one chunk of the implementation (256).
  const MatrixXfR tall = random_matrix(600, 8, 6);
  const Rotation h8 = Rotation::randomized_hadamard(8, 1);
  CHECK((rotate_input(tall, h8).cast<double>() - tall.cast<double>() * h8.matrix()).cwiseAbs().maxCoeff() < 1e-6);
  const MatrixXfR wide = random_matrix(8, 600, 7);
  CHECK((rotate_output(wide, h8).cast<double>() - h8.matrix().transpose() * wide.cast<double>())
            .cwiseAbs().maxCoeff() < 1e-6);

  // Block-diagonal: three blocks 8 + 4 + 12 against the dense block-diagonal matrix.
  const std::vector<Rotation> blocks = {Rotation::randomized_hadamard(8, 1), Rotation::random_orthogonal(4, 2),
                                        Rotation::randomized_hadamard(12, 3)};
  Eigen::MatrixXd B = Eigen::MatrixXd::Zero(24, 24);
  B.block(0, 0, 8, 8) = blocks[0].matrix();
  B.block(8, 8, 4, 4) = blocks[1].matrix();
  B.block(12, 12, 12, 12) = blocks[2].matrix();
  CHECK((rotate_input(W, blocks).cast<double>() - W.cast<double>() * B).cwiseAbs().maxCoeff() < 1e-6);
  const MatrixXfR Wt = random_matrix(24, 10, 9);
  CHECK((rotate_output(Wt, blocks).cast<double>() - B.transpose() * Wt.cast<double>()).cwiseAbs().maxCoeff() <
        1e-6);
}

TEST_CASE("fold: rejected inputs") {
  const MatrixXfR W = random_matrix(4, 8, 1);
  const Rotation q8 = Rotation::randomized_hadamard(8, 1);
  const Rotation q4 = Rotation::randomized_hadamard(4, 1);
  CHECK_THROWS_AS(scale_columns(W, Eigen::VectorXf::Ones(7)), Error);
  Eigen::VectorXf s = Eigen::VectorXf::Ones(8);
  s(3) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(scale_columns(W, s), Error);
  CHECK_THROWS_AS(rotate_input(W, q4), Error);   // 8 columns, Q of 4
  CHECK_THROWS_AS(rotate_output(W, q8), Error);  // 4 rows, Q of 8
  CHECK_NOTHROW(rotate_output(W, q4));
  MatrixXfR bad = W;
  bad(2, 5) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(scale_columns(bad, Eigen::VectorXf::Ones(8)), Error);
  CHECK_THROWS_AS(rotate_input(bad, q8), Error);
  CHECK_THROWS_AS(rotate_output(bad, q4), Error);
  CHECK_THROWS_AS(rotate_input(W, std::vector<Rotation>{}), Error);
  CHECK_THROWS_AS(rotate_input(W, std::vector<Rotation>{q4}), Error);       // 4 of 8 columns
  CHECK_THROWS_AS(rotate_output(W, std::vector<Rotation>{q4, q4}), Error);  // 8 of 4 rows
  CHECK_THROWS_AS(rotate_input(bad, std::vector<Rotation>{q4, q4}), Error);
  CHECK_THROWS_AS(rotate_input(MatrixXfR(0, 8), q8), Error);
  // Results that overflow float are rejected, not returned as inf.
  // A row along Q's first column times 3e38·√8 (entries ±3e38) maps to 8.5e38 there.
  const MatrixXfR big = (3e38 * std::sqrt(8.0) * q8.matrix().col(0).transpose()).cast<float>();
  REQUIRE(big.allFinite());
  CHECK_THROWS_AS(rotate_input(big, q8), Error);
  CHECK_NOTHROW(rotate_input(big / 4.0f, q8));
  CHECK_THROWS_AS(scale_columns(MatrixXfR::Constant(1, 8, 3e38f), Eigen::VectorXf::Constant(8, 2.0f)), Error);
}
