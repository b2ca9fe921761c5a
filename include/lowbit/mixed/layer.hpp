// layer.hpp: what the bit allocators know about a layer: shape, sensitivity, weight variance,
// pins, and optionally its weights and calibration Gram matrix for measured allocation.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/types.hpp>

#include <Eigen/Core>

#include <cmath>
#include <string>
#include <vector>

namespace lowbit::mixed {

/// One weight matrix to allocate bits to. The closed-form allocator needs rows, cols, alpha and
/// sigma2; the built-in measurement needs weight (and gram for output error). Pins restrict the
/// widths the layer may get (e.g. min_bits = 8 keeps an embedding at >= 8 bits, min_bits = 32
/// keeps it in float).
struct Layer {
  std::string name;
  Index rows = 0, cols = 0;
  double alpha = 1.0;   ///< sensitivity: loss per unit of weight-error energy (>= 0)
  double sigma2 = 1.0;  ///< variance of the gamma-clipped weights (>= 0)
  int min_bits = 0;     ///< pin: lowest width allowed
  int max_bits = 32;    ///< pin: highest width allowed (16/32 = float)
  MatrixXfR weight;     ///< [out, in]; optional for the closed form
  Eigen::MatrixXd gram; ///< X^T X over calibration tokens, [in, in]; empty = identity

  Index weights() const { return rows * cols; }
};

/// Throws lowbit::Error unless the layer is usable; `i` names it in the message.
inline void validate(const Layer& l, size_t i) {
  lowbit::detail::require(l.rows > 0 && l.cols > 0, "layers[{}] ({}): expected rows, cols > 0, got {}x{}",
                  i, l.name, l.rows, l.cols);
  lowbit::detail::require(std::isfinite(l.alpha) && l.alpha >= 0.0,
                  "layers[{}] ({}).alpha: expected a finite value >= 0, got {}", i, l.name, l.alpha);
  lowbit::detail::require(std::isfinite(l.sigma2) && l.sigma2 >= 0.0,
                  "layers[{}] ({}).sigma2: expected a finite value >= 0, got {}", i, l.name,
                  l.sigma2);
  lowbit::detail::require(l.min_bits <= l.max_bits,
                  "layers[{}] ({}): expected min_bits <= max_bits, got {} > {}", i, l.name,
                  l.min_bits, l.max_bits);
  if (l.weight.size() > 0) {
    lowbit::detail::require(l.weight.rows() == l.rows && l.weight.cols() == l.cols,
                    "layers[{}] ({}).weight: expected {}x{}, got {}x{}", i, l.name, l.rows, l.cols,
                    l.weight.rows(), l.weight.cols());
    lowbit::detail::require(l.weight.allFinite(), "layers[{}] ({}).weight: expected finite values", i,
                    l.name);
  }
  if (l.gram.size() > 0) {
    lowbit::detail::require(l.gram.rows() == l.cols && l.gram.cols() == l.cols,
                    "layers[{}] ({}).gram: expected {}x{} (in x in), got {}x{}", i, l.name, l.cols,
                    l.cols, l.gram.rows(), l.gram.cols());
    lowbit::detail::require(l.gram.allFinite(), "layers[{}] ({}).gram: expected finite values", i, l.name);
  }
}

/// Validates a whole list (non-empty, every layer valid).
inline void validate(const std::vector<Layer>& layers) {
  lowbit::detail::require(!layers.empty(), "layers: expected at least one layer");
  for (size_t i = 0; i < layers.size(); ++i) validate(layers[i], i);
}

}  // namespace lowbit::mixed
