// test_histogram.cpp: the bounded histogram behind the histogram observers: exact merging as the
// range grows, quantiles within one bin, anchoring at zero, degenerate first batches.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <lowbit/calib/histogram.hpp>
#include <random>
#include <vector>

using lowbit::calib::detail::Histogram;

namespace {

// Counts of `values` binned directly with the histogram's final edges.
std::vector<double> brute_counts(const Histogram& h, const std::vector<double>& values) {
  std::vector<double> c(static_cast<size_t>(h.bins()), 0.0);
  for (double v : values) {
    const double pos = std::floor((v - h.lo()) / h.width());
    c[static_cast<size_t>(std::clamp(pos, 0.0, h.bins() - 1.0))] += 1.0;
  }
  return c;
}

}  // namespace

TEST_CASE("Histogram merges bins exactly when the range grows") {
  std::mt19937 rng(7);
  for (bool anchored : {false, true}) {
    Histogram h(64, anchored);
    std::vector<double> all;
    // Batches whose ranges grow in both directions, by small and by huge factors.
    const double spans[][2] = {
        {-0.1, 0.3}, {-0.2, 0.35}, {-5.0, 1.0}, {-6.0, 40.0}, {-1000.0, 3.0}};
    for (const auto& s : spans) {
      std::uniform_real_distribution<double> u(anchored ? 0.0 : s[0], s[1]);
      std::vector<double> batch(500);
      for (double& v : batch) v = static_cast<float>(u(rng));
      const auto [mn, mx] = std::minmax_element(batch.begin(), batch.end());
      h.cover(*mn, *mx);
      for (double v : batch) h.add(v);
      all.insert(all.end(), batch.begin(), batch.end());
      REQUIRE(h.lo() <= *mn);
      REQUIRE(h.hi() >= *mx);
      // The observed span keeps at least about half of the bins busy.
      const auto [amn, amx] = std::minmax_element(all.begin(), all.end());
      REQUIRE(*amx - (anchored ? 0.0 : *amn) >= 0.45 * (h.hi() - h.lo()));
    }
    if (anchored) REQUIRE(h.lo() == 0.0);
    REQUIRE(h.total() == static_cast<double>(all.size()));
    REQUIRE(h.counts() == brute_counts(h, all));
  }
}

TEST_CASE("Histogram quantiles are within one bin of the exact order statistics") {
  std::mt19937 rng(11);
  std::normal_distribution<double> n(1.0, 2.0);
  Histogram h(256, false);
  std::vector<double> all;
  for (int b = 0; b < 4; ++b) {
    std::vector<double> batch(5000);
    for (double& v : batch) v = n(rng);
    const auto [mn, mx] = std::minmax_element(batch.begin(), batch.end());
    h.cover(*mn, *mx);
    for (double v : batch) h.add(v);
    all.insert(all.end(), batch.begin(), batch.end());
  }
  std::sort(all.begin(), all.end());
  for (double q : {0.001, 0.05, 0.5, 0.9, 0.999}) {
    const double exact = all[static_cast<size_t>(q * static_cast<double>(all.size()))];
    REQUIRE(std::abs(h.quantile(q) - exact) <= h.width());
  }
}

TEST_CASE("Histogram handles a constant first batch and zeros") {
  Histogram h(32, false);
  h.cover(2.5, 2.5);
  for (int i = 0; i < 10; ++i) h.add(2.5);
  REQUIRE(h.lo() < 2.5);
  REQUIRE(h.hi() > 2.5);
  REQUIRE(std::abs(h.quantile(0.5) - 2.5) <= h.width());
  h.cover(-1.0, 2.5);  // then a real range: the tiny bins merge up to it
  h.add(-1.0);
  REQUIRE(h.lo() <= -1.0);
  REQUIRE(h.total() == 11.0);
  REQUIRE(h.counts()[static_cast<size_t>(std::floor((2.5 - h.lo()) / h.width()))] == 10.0);
  Histogram z(32, true);
  z.cover(0.0, 0.0);
  z.add(0.0);
  REQUIRE(z.width() > 0.0);
  z.cover(0.0, 1e6);
  z.add(1e6);
  REQUIRE(z.hi() >= 1e6);
  REQUIRE(z.counts()[0] == 1.0);
  REQUIRE(z.counts()[static_cast<size_t>(std::min(31.0, std::floor(1e6 / z.width())))] == 1.0);
}
