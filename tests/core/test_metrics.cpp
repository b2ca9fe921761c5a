// test_metrics.cpp: MSE, SQNR and max abs error against hand-computed values.
#include <lowbit/core/metrics.hpp>

#include <catch2/catch.hpp>

#include <cmath>

TEST_CASE("error metrics match hand-computed values") {
  lowbit::MatrixXfR ref(2, 2), approx(2, 2);
  ref << 1.0f, -2.0f, 3.0f, 0.0f;
  approx << 1.5f, -2.0f, 2.0f, 0.5f;
  // errors 0.5, 0, -1, 0.5: sum of squares 1.5; signal 14.
  CHECK(lowbit::mse(ref, approx) == Approx(1.5 / 4));
  CHECK(lowbit::sqnr_db(ref, approx) == Approx(10.0 * std::log10(14.0 / 1.5)));
  CHECK(lowbit::max_abs_error(ref, approx) == 1.0);
  CHECK(std::isinf(lowbit::sqnr_db(ref, ref)));
  CHECK(lowbit::mse(ref, ref) == 0.0);
}

TEST_CASE("error metrics reject mismatched or empty matrices") {
  CHECK_THROWS_WITH(lowbit::mse(lowbit::MatrixXfR::Zero(2, 2), lowbit::MatrixXfR::Zero(2, 3)),
                    Catch::Contains("2x3"));
  CHECK_THROWS_AS(lowbit::sqnr_db(lowbit::MatrixXfR(0, 0), lowbit::MatrixXfR(0, 0)), lowbit::Error);
  CHECK_THROWS_AS(lowbit::max_abs_error(lowbit::MatrixXfR::Zero(1, 2), lowbit::MatrixXfR::Zero(2, 1)),
                  lowbit::Error);
}
