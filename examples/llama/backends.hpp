// backends.hpp: the engine's run-time Linear backends: fp32 (Eigen) and lowbit's packed kernels.
#pragma once

#include "engine.hpp"

#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/quantize.hpp>
#include <lowbit/core/quantized_matrix.hpp>
#include <lowbit/core/scheme.hpp>
#include <lowbit/gemm/linear.hpp>
#include <lowbit/gemm/packed_weights.hpp>

#include <memory>
#include <string>

namespace llama {

/// A backend chosen at run time by name:
/// - "fp32": Eigen GEMM on float weights;
/// - "w<b>a8[_g<G>]": <b>-bit symmetric weights (per channel, or groups of G along K), INT8
///   per-token activations (lowbit's integer kernels), e.g. "w8a8", "w4a8_g32";
/// - "w<b>[_g<G>]": weight-only, fp32 activations, e.g. "w8", "w4_g32", "w3_g32", "w2_g32"
///   (2..4 bits run on the 4-bit kernels).
struct BackendSpec {
  std::string name = "fp32";
  int bits = 32;       ///< 32 for fp32, else 2..8
  int group_size = 0;  ///< 0: per output channel
  lowbit::ActivationQuant activations = lowbit::ActivationQuant::float32;

  bool is_fp32() const { return bits == 32; }
  /// The weight scheme (symmetric, per channel or per group).
  lowbit::Scheme scheme() const {
    return group_size > 0 ? lowbit::Scheme::per_group(bits, group_size)
                          : lowbit::Scheme::per_channel(bits);
  }
};

/// Parses a backend name (see BackendSpec); throws lowbit::Error naming the accepted forms.
inline BackendSpec parse_backend(const std::string& name) {
  BackendSpec s;
  s.name = name;
  if (name == "fp32") return s;
  // w<bits>[a8][_g<digits>]: parsed by hand (std::regex trips GCC 12's -Wmaybe-uninitialized).
  const auto bad = [&] {
    lowbit::detail::fail("backend: expected fp32, w<2..8>a8[_g<G>] or w<2..8>[_g<G>], got '{}'", name);
  };
  if (name.size() < 2 || name[0] != 'w' || name[1] < '2' || name[1] > '8') bad();
  s.bits = name[1] - '0';
  size_t i = 2;
  if (name.compare(i, 2, "a8") == 0) {
    s.activations = lowbit::ActivationQuant::int8;
    i += 2;
  }
  if (i < name.size()) {
    if (name.compare(i, 2, "_g") != 0 || name.size() == i + 2 || name.size() > i + 7) bad();
    for (size_t j = i + 2; j < name.size(); ++j)
      if (name[j] < '0' || name[j] > '9') bad();
    s.group_size = std::stoi(name.substr(i + 2));
    lowbit::detail::require(s.group_size > 0, "backend '{}': group size must be > 0", name);
  }
  return s;
}

/// A Linear on lowbit's packed integer weights: y = lowbit::linear(x ⊘ s, pack(Q)), where the
/// optional per-input-channel scales s (AWQ, SmoothQuant) were multiplied into the weights before
/// quantization, so x ⊘ s undoes them on the activations.
class LowbitLinear final : public Linear {
 public:
  template <int Bits>
  LowbitLinear(const lowbit::QuantizedMatrix<Bits>& q, lowbit::ActivationQuant activations,
               Eigen::VectorXf input_scale = {})
      : packed_(lowbit::pack_weights(q)), bytes_(q.bytes()) {
    opt_.activations = activations;
    if (input_scale.size() > 0) {
      lowbit::detail::require(input_scale.size() == q.cols(),
                              "input_scale: expected {} entries (in_features), got {}", q.cols(),
                              input_scale.size());
      lowbit::detail::require(input_scale.allFinite() && input_scale.minCoeff() > 0.0f,
                              "input_scale: expected finite values > 0");
      inv_scale_ = input_scale.cwiseInverse().transpose();
      bytes_ += size_t(input_scale.size()) * 4;
    }
  }
  MatrixXfR forward(const MatrixXfR& x) const override {
    if (inv_scale_.size() == 0) return lowbit::linear(x, packed_, opt_);
    const MatrixXfR xs = x.array().rowwise() * inv_scale_.array();
    return lowbit::linear(xs, packed_, opt_);
  }
  Index out_features() const override { return packed_.rows(); }
  Index in_features() const override { return packed_.cols(); }
  size_t bytes() const override { return bytes_; }
  const lowbit::PackedWeights& packed() const { return packed_; }

 private:
  lowbit::PackedWeights packed_;
  lowbit::LinearOptions opt_;
  Eigen::RowVectorXf inv_scale_;
  size_t bytes_ = 0;
};

/// A lowbit Linear from integer codes and parameters of any width 2..8 (e.g. a PTQ result).
inline std::shared_ptr<const Linear> make_lowbit_linear(const lowbit::MatrixXiR& codes,
                                                        const lowbit::QuantParams& params,
                                                        lowbit::ActivationQuant activations,
                                                        const Eigen::VectorXf& input_scale = {}) {
  switch (params.scheme.bits) {
    case 8: return std::make_shared<LowbitLinear>(lowbit::QuantizedMatrix<8>(codes, params), activations, input_scale);
    case 7: return std::make_shared<LowbitLinear>(lowbit::QuantizedMatrix<7>(codes, params), activations, input_scale);
    case 6: return std::make_shared<LowbitLinear>(lowbit::QuantizedMatrix<6>(codes, params), activations, input_scale);
    case 5: return std::make_shared<LowbitLinear>(lowbit::QuantizedMatrix<5>(codes, params), activations, input_scale);
    case 4: return std::make_shared<LowbitLinear>(lowbit::QuantizedMatrix<4>(codes, params), activations, input_scale);
    case 3: return std::make_shared<LowbitLinear>(lowbit::QuantizedMatrix<3>(codes, params), activations, input_scale);
    case 2: return std::make_shared<LowbitLinear>(lowbit::QuantizedMatrix<2>(codes, params), activations, input_scale);
    default: lowbit::detail::fail("params.scheme.bits: expected 2..8, got {}", params.scheme.bits);
  }
}

/// The Linear of `spec` for weight W: fp32, or round-to-nearest min-max quantization (core's
/// choose_params + quantize) on lowbit's kernels.
inline std::shared_ptr<const Linear> make_linear(const MatrixXfR& W, const BackendSpec& spec) {
  if (spec.is_fp32()) return std::make_shared<Fp32Linear>(W);
  const lowbit::QuantParams p = lowbit::choose_params(W, spec.scheme());
  return make_lowbit_linear(lowbit::quantize(W, p), p, spec.activations);
}

/// Puts every block Linear of `model` (and the output head when `include_output`) on `spec`,
/// with round-to-nearest weights from `w`.
inline void apply_backend(Model& model, const Weights& w, const BackendSpec& spec,
                          bool include_output = false) {
  for (int l = 0; l < w.config.n_layers; ++l)
    for (int k = 0; k < 7; ++k) model.set_linear(l, k, make_linear(linear_weight(w.layers[size_t(l)], k), spec));
  if (include_output) model.set_output(make_linear(w.output, spec));
}

}  // namespace llama
