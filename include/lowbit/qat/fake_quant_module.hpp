// fake_quant_module.hpp: FakeQuant, PyTorch's (learnable) FakeQuantize workflow: observe, freeze, learn.
#pragma once

#include <lowbit/calib/minmax_observer.hpp>
#include <lowbit/calib/moving_average_observer.hpp>
#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/scheme.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/qat/fake_quantize.hpp>
#include <lowbit/qat/lsq.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <variant>
#include <vector>

namespace lowbit::qat {

/// Which observer a FakeQuant module keeps (calib::MinMaxObserver or
/// calib::MovingAverageMinMaxObserver).
enum class ObserverKind { min_max, moving_average };

/// A fake-quantization module for one tensor (a weight [out, in] or activations [tokens,
/// features]) with PyTorch's FakeQuantize / _LearnableFakeQuantize switches:
/// - observer enabled: every forward() observes x and takes its params from the observer;
/// - fake quant enabled: forward() returns fake_quantize(x, params()), else x unchanged;
/// - learning enabled: backward() accumulates LSQ/LSQ+ gradients of the scale (and, for
///   asymmetric schemes, the zero point) in grad_scale()/grad_zero_point(); else it is the STE.
/// Scale and zero point are float values an optimiser updates in place (scale(), zero_point());
/// forward uses the scale floored at float epsilon and the zero point rounded and clamped, and
/// params() exports exactly those as QuantParams for inference. Per-channel and per-group
/// params are laid out over the rows of x (weights); activations use per-tensor schemes.
class FakeQuant {
 public:
  /// Starts observing with fake quantization on and learning off (PyTorch's defaults).
  /// `averaging_constant` (in (0, 1]) is used by the moving-average observer only.
  explicit FakeQuant(const Scheme& scheme, ObserverKind observer = ObserverKind::min_max,
                     float averaging_constant = 0.01f)
      : observer_(make_observer(scheme, observer, averaging_constant)) {}

  // --- switches -----------------------------------------------------------------------------
  /// Observe every forward batch and take params from the observer.
  void enable_observer(bool on = true) { observing_ = on; }
  /// Fake-quantize in forward (off: forward and backward are the identity).
  void enable_fake_quant(bool on = true) { fake_quant_ = on; }
  /// Compute LSQ gradients for the scale and zero point in backward (off: STE only).
  void enable_learning(bool on = true) { learning_ = on; }
  bool observer_enabled() const { return observing_; }
  bool fake_quant_enabled() const { return fake_quant_; }
  bool learning_enabled() const { return learning_; }

  /// Collect ranges only: observer on, output = input, no learning (calibration pass).
  void enable_static_observation() { set_modes(true, false, false); }
  /// Observer-driven fake quantization: observer on, fake quant on, no learning.
  void enable_static_estimate() { set_modes(true, true, false); }
  /// Freeze the current params: observer off, fake quant on, no learning (STE fine-tuning).
  /// Throws lowbit::Error when there are no params yet (nothing observed or set).
  void freeze() {
    require_params();
    set_modes(false, true, false);
  }
  /// Learn scale and zero point (LSQ/LSQ+) from the current params: observer off, fake quant
  /// on, learning on. Throws lowbit::Error when there are no params yet.
  void enable_param_learning() {
    require_params();
    set_modes(false, true, true);
  }

  /// The factor applied to the scale and zero-point gradients; by default LSQ's
  /// 1 / sqrt(numel * qmax) for the x of each backward (see lsq_grad_factor()).
  void set_grad_factor(float factor) {
    lowbit::detail::require(std::isfinite(factor) && factor > 0.0f,
                            "grad_factor: expected a finite value > 0, got {}", factor);
    grad_factor_ = factor;
  }
  /// Back to LSQ's 1 / sqrt(numel * qmax).
  void use_lsq_grad_factor() { grad_factor_ = 0.0f; }

  // --- parameters ---------------------------------------------------------------------------
  /// Sets the params (e.g. from a PTQ search) as the learnable starting point; throws
  /// lowbit::Error unless their scheme is this module's and they are valid.
  void set_params(const QuantParams& params) {
    lowbit::detail::require(params.scheme == scheme(),
                            "params.scheme: expected this FakeQuant's scheme ({}-bit {} {})",
                            scheme().bits, scheme().symmetric ? "symmetric" : "asymmetric",
                            to_string(scheme().granularity));
    lowbit::detail::require(!params.scale.empty(), "params.scale: expected at least one entry");
    lowbit::detail::require(params.zero_point.size() == params.scale.size(),
                            "params.zero_point: expected {} entries (as scale), got {}",
                            params.scale.size(), params.zero_point.size());
    validate(params, scheme().granularity == Granularity::per_tensor ? 1 : Index(params.scale.size()),
             scheme().granularity == Granularity::per_group ? scheme().group_size : 1);
    scale_ = params.scale;
    zero_point_.assign(params.zero_point.begin(), params.zero_point.end());
    clear_grads();
  }

  /// Whether params exist (observed, or set).
  bool has_params() const { return !scale_.empty(); }

  /// The params forward uses, for inference: scale floored at float epsilon, zero point
  /// nearbyint-rounded and clamped to [qmin, qmax] (0 for symmetric schemes). Throws
  /// lowbit::Error without params or when the learned values went non-finite.
  QuantParams params() const {
    require_params();
    QuantParams p{scheme(), std::vector<float>(scale_.size()),
                  std::vector<int32_t>(scale_.size())};
    const float eps = std::numeric_limits<float>::epsilon();
    const float lo = float(scheme().qmin()), hi = float(scheme().qmax());
    for (size_t i = 0; i < scale_.size(); ++i) {
      lowbit::detail::require(std::isfinite(scale_[i]) && std::isfinite(zero_point_[i]),
                              "FakeQuant: learned scale/zero_point[{}] is not finite ({}, {})", i,
                              scale_[i], zero_point_[i]);
      p.scale[i] = std::max(scale_[i], eps);
      p.zero_point[i] =
          scheme().symmetric ? 0 : int32_t(std::clamp(std::nearbyint(zero_point_[i]), lo, hi));
    }
    return p;
  }

  /// Learnable float scales and zero points, one per block (an optimiser updates them).
  std::vector<float>& scale() { return scale_; }
  const std::vector<float>& scale() const { return scale_; }
  std::vector<float>& zero_point() { return zero_point_; }
  const std::vector<float>& zero_point() const { return zero_point_; }
  /// Gradients accumulated by backward() with learning enabled (zero point: 0 when symmetric).
  const std::vector<float>& grad_scale() const { return grad_scale_; }
  const std::vector<float>& grad_zero_point() const { return grad_zero_point_; }
  /// Zeroes the accumulated parameter gradients.
  void zero_grad() { clear_grads(); }

  const Scheme& scheme() const { return observer().scheme(); }
  /// The observer (its ranges, batch count).
  const calib::Observer& observer() const {
    return std::visit([](const auto& o) -> const calib::Observer& { return o; }, observer_);
  }
  /// Forgets all observations (params stay until the next observation or set_params).
  void reset_observer() {
    std::visit([](auto& o) { o.reset(); }, observer_);
  }

  // --- forward / backward -------------------------------------------------------------------
  /// Writes the module's output for x into y (resized; reusing y avoids allocation) and keeps
  /// what backward needs. Throws lowbit::Error on non-finite or empty x, params that do not
  /// fit x, or no params when fake quantization is on.
  void forward_into(const Eigen::Ref<const MatrixXfR>& x, MatrixXfR& y) {
    lowbit::detail::require_finite(x, "x");
    if (observing_) {
      std::visit([&](auto& o) { o.observe(x); }, observer_);
      const QuantParams p = observer().params();
      scale_ = p.scale;
      zero_point_.assign(p.zero_point.begin(), p.zero_point.end());
      if (grad_scale_.size() != scale_.size()) clear_grads();
    }
    saved_fake_quant_ = fake_quant_;
    if (!fake_quant_) {
      y = x;
      saved_rows_ = x.rows();
      saved_cols_ = x.cols();
      return;
    }
    used_ = params();
    validate(used_, x.rows(), x.cols());
    x_ = x;
    saved_rows_ = x.rows();
    saved_cols_ = x.cols();
    fake_quantize_into(x_, used_, y);
  }

  /// The module's output for x (see forward_into).
  MatrixXfR forward(const Eigen::Ref<const MatrixXfR>& x) {
    MatrixXfR y;
    forward_into(x, y);
    return y;
  }

  /// Writes d loss / d x into grad_x (resized) for the last forward's x: the STE mask (or the
  /// identity with fake quantization off); with learning on, also adds the LSQ gradients to
  /// grad_scale()/grad_zero_point(). Throws lowbit::Error before any forward, or on a
  /// mismatched or non-finite grad_y.
  void backward_into(const Eigen::Ref<const MatrixXfR>& grad_y, MatrixXfR& grad_x) {
    lowbit::detail::require(saved_rows_ > 0, "FakeQuant: backward() called before forward()");
    lowbit::detail::require(grad_y.rows() == saved_rows_ && grad_y.cols() == saved_cols_,
                            "grad_y: expected shape {}x{} (as the last forward's x), got {}x{}",
                            saved_rows_, saved_cols_, grad_y.rows(), grad_y.cols());
    if (!saved_fake_quant_) {
      lowbit::detail::require_finite(grad_y, "grad_y");
      grad_x = grad_y;
      return;
    }
    if (!learning_) {
      fake_quantize_backward_into(grad_y, x_, used_, grad_x);
      return;
    }
    const float factor =
        grad_factor_ > 0.0f ? grad_factor_ : lsq_grad_factor(scheme(), x_.size());
    lsq_backward_into(grad_y, x_, used_, factor, grads_);
    if (grad_scale_.size() != scale_.size()) clear_grads();
    for (size_t i = 0; i < grad_scale_.size(); ++i) {
      grad_scale_[i] += grads_.grad_scale[i];
      if (!scheme().symmetric) grad_zero_point_[i] += grads_.grad_zero_point[i];
    }
    grad_x.swap(grads_.grad_x);
  }

  /// d loss / d x for the last forward (see backward_into).
  MatrixXfR backward(const Eigen::Ref<const MatrixXfR>& grad_y) {
    MatrixXfR grad_x;
    backward_into(grad_y, grad_x);
    return grad_x;
  }

 private:
  using AnyObserver = std::variant<calib::MinMaxObserver, calib::MovingAverageMinMaxObserver>;

  static AnyObserver make_observer(const Scheme& scheme, ObserverKind kind, float constant) {
    switch (kind) {
      case ObserverKind::min_max: return calib::MinMaxObserver(scheme);
      case ObserverKind::moving_average:
        return calib::MovingAverageMinMaxObserver(scheme, constant);
    }
    lowbit::detail::fail("observer: not an ObserverKind value");
  }

  void set_modes(bool observe, bool fake_quant, bool learn) {
    observing_ = observe;
    fake_quant_ = fake_quant;
    learning_ = learn;
  }
  void require_params() const {
    lowbit::detail::require(has_params(),
                            "FakeQuant: no params yet (observe a batch or call set_params)");
  }
  void clear_grads() {
    grad_scale_.assign(scale_.size(), 0.0f);
    grad_zero_point_.assign(scale_.size(), 0.0f);
  }

  AnyObserver observer_;
  bool observing_ = true, fake_quant_ = true, learning_ = false;
  float grad_factor_ = 0.0f;  // 0: LSQ's 1 / sqrt(numel * qmax)
  std::vector<float> scale_, zero_point_, grad_scale_, grad_zero_point_;
  // Saved by forward for backward.
  MatrixXfR x_;
  QuantParams used_;
  bool saved_fake_quant_ = false;
  Index saved_rows_ = 0, saved_cols_ = 0;
  LsqGrads grads_;
};

}  // namespace lowbit::qat
