// allocation.hpp: the result of a bit allocation (per layer choice, bytes, distortion) and its
// printable report.
#pragma once

#include <lowbit/core/types.hpp>
#include <lowbit/mixed/candidate.hpp>
#include <lowbit/mixed/layer.hpp>

#include <fmt/format.h>

#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

namespace lowbit::mixed {

/// What one layer got. Distortions are NaN when unknown.
struct LayerChoice {
  std::string name;
  Index rows = 0, cols = 0;
  Candidate candidate;  ///< bits, group size, signedness, method
  size_t bytes = 0;     ///< every stored byte of the layer
  double continuous_bits = std::numeric_limits<double>::quiet_NaN();  ///< closed form, unrounded
  double predicted = std::numeric_limits<double>::quiet_NaN();  ///< model n*alpha*sigma2*2^(-2b)
  double measured = std::numeric_limits<double>::quiet_NaN();   ///< measured distortion

  double bits_per_weight() const { return 8.0 * double(bytes) / double(rows * cols); }
};

/// A bit allocation over a list of layers.
struct Allocation {
  std::string allocator;  ///< "closed-form", "measured", "uniform"
  std::vector<LayerChoice> layers;
  size_t budget_bytes = 0;
  size_t total_bytes = 0;
  Index total_weights = 0;
  double predicted_total = std::numeric_limits<double>::quiet_NaN();
  double measured_total = std::numeric_limits<double>::quiet_NaN();
  /// Measured allocator: a lower bound on the best achievable total distortion (Lagrangian
  /// dual); equals measured_total when `exact`.
  double lower_bound = std::numeric_limits<double>::quiet_NaN();
  bool exact = false;  ///< the measured allocator proved its choice optimal (exact DP)

  double bits_per_weight() const {
    return total_weights == 0 ? 0.0 : 8.0 * double(total_bytes) / double(total_weights);
  }
};

namespace detail {

/// Recomputes total_bytes, total_weights and the distortion totals (NaN if any layer's is NaN).
inline void update_totals(Allocation& a) {
  a.total_bytes = 0;
  a.total_weights = 0;
  a.predicted_total = 0.0;
  a.measured_total = 0.0;
  for (const auto& l : a.layers) {
    a.total_bytes += l.bytes;
    a.total_weights += l.rows * l.cols;
    a.predicted_total += l.predicted;
    a.measured_total += l.measured;
  }
}

inline std::string fmt_value(double v) { return std::isnan(v) ? std::string("-") : fmt::format("{:.4g}", v); }

}  // namespace detail

/// A fixed-width table: one row per layer (shape, width, group, method, bytes, bits/weight,
/// continuous bits, predicted and measured distortion) and a totals row.
inline std::string format_report(const Allocation& a) {
  std::string out = fmt::format("{} allocation: {} bytes of {} budget, {:.3f} bits/weight\n",
                                a.allocator, a.total_bytes, a.budget_bytes, a.bits_per_weight());
  out += fmt::format("{:<16} {:>9} {:>4} {:>5} {:>5} {:>6} {:>9} {:>6} {:>6} {:>11} {:>11}\n",
                     "layer", "shape", "bits", "group", "sym", "method", "bytes", "b/w", "cont",
                     "predicted", "measured");
  for (const auto& l : a.layers) {
    const Candidate& c = l.candidate;
    out += fmt::format(
        "{:<16} {:>9} {:>4} {:>5} {:>5} {:>6} {:>9} {:>6.3f} {:>6} {:>11} {:>11}\n", l.name,
        fmt::format("{}x{}", l.rows, l.cols), c.keeps_float() ? std::string("f32") : std::to_string(c.bits),
        c.keeps_float() ? std::string("-") : (c.group_size > 0 ? std::to_string(c.group_size) : std::string("row")),
        c.keeps_float() ? "-" : (c.symmetric ? "yes" : "no"),
        c.keeps_float() ? std::string_view("float") : to_string(c.method), l.bytes,
        l.bits_per_weight(),
        std::isnan(l.continuous_bits) ? std::string("-") : fmt::format("{:.2f}", l.continuous_bits),
        detail::fmt_value(l.predicted), detail::fmt_value(l.measured));
  }
  out += fmt::format("{:<16} {:>9} {:>4} {:>5} {:>5} {:>6} {:>9} {:>6.3f} {:>6} {:>11} {:>11}\n",
                     "total", a.total_weights, "", "", "", "", a.total_bytes, a.bits_per_weight(),
                     "", detail::fmt_value(a.predicted_total), detail::fmt_value(a.measured_total));
  if (!std::isnan(a.lower_bound))
    out += fmt::format("lower bound on total distortion: {} ({})\n", detail::fmt_value(a.lower_bound),
                       a.exact ? "exact optimum" : "Lagrangian dual bound");
  return out;
}

/// Every layer stored as `c` (pins ignored): the baseline "uniform INT4 g128" and the like.
/// Distortions are left NaN (see measure_allocation()).
inline Allocation uniform_allocation(const std::vector<Layer>& layers, const Candidate& c) {
  validate(layers);
  validate(c);
  Allocation a;
  a.allocator = "uniform " + label(c);
  for (const auto& l : layers) {
    LayerChoice ch;
    ch.name = l.name;
    ch.rows = l.rows;
    ch.cols = l.cols;
    ch.candidate = c;
    ch.bytes = candidate_bytes(c, l.rows, l.cols);
    a.layers.push_back(ch);
  }
  detail::update_totals(a);
  a.budget_bytes = a.total_bytes;
  return a;
}

}  // namespace lowbit::mixed
