// epilogue.hpp: what linear() does to each output after the dot products: bias, activation, clamp.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>
#include <vector>

namespace lowbit {

/// Pointwise activation applied after the bias.
enum class Activation { none, relu, silu };

inline std::string_view to_string(Activation a) {
  switch (a) {
    case Activation::none: return "none";
    case Activation::relu: return "relu";
    case Activation::silu: return "silu";
  }
  return "unknown";
}

/// The output stage, plain data (as gemmlowp's output stages): for output y[m, n],
///   y = y + bias[n]              (when bias is non-empty; it must hold N values)
///   y = max(y, 0)                (relu)  or  y = y / (1 + exp(-y))  (silu)
///   y = min(max(y, clamp_min), clamp_max)
/// Every Isa applies these steps in this order with the same float operations, so they never
/// make two paths differ.
struct Epilogue {
  std::vector<float> bias;
  Activation activation = Activation::none;
  float clamp_min = -std::numeric_limits<float>::infinity();
  float clamp_max = std::numeric_limits<float>::infinity();
};

namespace detail {

/// Throws lowbit::Error unless `e` fits an output with `n` columns.
inline void validate(const Epilogue& e, Index n) {
  require(e.bias.empty() || Index(e.bias.size()) == n,
          "epilogue.bias: expected 0 or {} values (one per output channel), got {}", n, e.bias.size());
  for (size_t i = 0; i < e.bias.size(); ++i)
    require(std::isfinite(e.bias[i]), "epilogue.bias[{}]: expected a finite value, got {}", i, e.bias[i]);
  require(e.activation == Activation::none || e.activation == Activation::relu ||
              e.activation == Activation::silu,
          "epilogue.activation: not an Activation value");
  require(!std::isnan(e.clamp_min) && !std::isnan(e.clamp_max) && e.clamp_min <= e.clamp_max,
          "epilogue.clamp_min/clamp_max: expected min <= max, got [{}, {}]", e.clamp_min, e.clamp_max);
}

/// Applies the epilogue to outputs n0 .. n0 + count - 1 of one row.
inline void apply_epilogue(float* y, Index n0, Index count, const Epilogue& e) noexcept {
  if (!e.bias.empty())
    for (Index i = 0; i < count; ++i) y[i] = y[i] + e.bias[size_t(n0 + i)];
  if (e.activation == Activation::relu)
    for (Index i = 0; i < count; ++i) y[i] = std::max(y[i], 0.0f);
  else if (e.activation == Activation::silu)
    for (Index i = 0; i < count; ++i) y[i] = y[i] / (1.0f + std::exp(-y[i]));
  if (e.clamp_min > -std::numeric_limits<float>::infinity() ||
      e.clamp_max < std::numeric_limits<float>::infinity())
    for (Index i = 0; i < count; ++i) y[i] = std::min(std::max(y[i], e.clamp_min), e.clamp_max);
}

}  // namespace detail
}  // namespace lowbit
