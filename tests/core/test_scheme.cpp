// test_scheme.cpp: code ranges, parameter layout and scheme validation.
#include <lowbit/core/scheme.hpp>

#include <catch2/catch.hpp>

#include <vector>

using lowbit::Granularity;
using lowbit::Scheme;

TEST_CASE("code ranges follow the bit width, signedness and narrow range") {
  struct Case { int bits; bool sym; bool narrow; int qmin, qmax; };
  const std::vector<Case> cases = {
      {8, true, false, -128, 127}, {8, true, true, -127, 127}, {8, false, false, 0, 255},
      {8, false, true, 1, 255},    {4, true, false, -8, 7},    {4, true, true, -7, 7},
      {4, false, false, 0, 15},    {3, true, false, -4, 3},    {2, true, false, -2, 1},
      {2, true, true, -1, 1},      {2, false, false, 0, 3},    {5, false, false, 0, 31},
  };
  for (const auto& c : cases) {
    Scheme s{c.bits, c.sym, Granularity::per_tensor, 0, c.narrow};
    INFO("bits " << c.bits << " symmetric " << c.sym << " narrow " << c.narrow);
    CHECK(s.qmin() == c.qmin);
    CHECK(s.qmax() == c.qmax);
  }
}

TEST_CASE("parameter layout per tensor, channel and group") {
  CHECK(lowbit::param_count(Scheme::per_tensor(8), 7, 9) == 1);
  CHECK(lowbit::param_count(Scheme::per_channel(8), 7, 9) == 7);
  // 9 columns in groups of 4: 4 + 4 + 1 (a short last group).
  const Scheme g = Scheme::per_group(4, 4);
  CHECK(lowbit::groups_per_row(g, 9) == 3);
  CHECK(lowbit::param_count(g, 7, 9) == 21);
  CHECK(lowbit::param_index(g, 9, 0, 8) == 2);
  CHECK(lowbit::param_index(g, 9, 2, 5) == 7);
  CHECK(lowbit::param_index(Scheme::per_channel(8), 9, 5, 3) == 5);

  std::vector<int> ends;
  lowbit::detail::for_each_block(g, 1, 9, [&](lowbit::Index p, lowbit::Index r, lowbit::Index c0,
                                               lowbit::Index c1) {
    CHECK(r == 0);
    CHECK(p == static_cast<lowbit::Index>(ends.size()));
    CHECK(c0 == 4 * p);
    ends.push_back(static_cast<int>(c1));
  });
  CHECK(ends == std::vector<int>{4, 8, 9});
}

TEST_CASE("invalid schemes are rejected") {
  CHECK_THROWS_AS(validate(Scheme::per_tensor(1)), lowbit::Error);
  CHECK_THROWS_AS(validate(Scheme::per_tensor(9)), lowbit::Error);
  CHECK_THROWS_WITH(validate(Scheme::per_group(4, 0)), Catch::Contains("group_size"));
  CHECK_THROWS_AS(validate(Scheme::per_group(4, -32)), lowbit::Error);
  CHECK_THROWS_WITH(validate(Scheme::per_channel(12)), Catch::Contains("scheme.bits"));
  CHECK_NOTHROW(validate(Scheme::per_group(2, 1)));
  // lowbit::Error is an invalid_argument, so generic handlers catch it.
  CHECK_THROWS_AS(validate(Scheme::per_tensor(0)), std::invalid_argument);
}
