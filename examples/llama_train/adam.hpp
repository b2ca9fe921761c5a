// adam.hpp: a small Adam optimiser over flat float spans (weights and learned step sizes).
#pragma once

#include <lowbit/core/error.hpp>

#include <cmath>
#include <cstddef>
#include <vector>

namespace llama::train {

/// Adam (Kingma & Ba) with bias correction. Each call to step() passes the same list of slots in
/// the same order; slot i has its own learning rate multiplier.
class Adam {
 public:
  struct Slot {
    float* param;
    const float* grad;
    std::size_t size;
    float lr_scale = 1.0f;
  };

  explicit Adam(float lr, float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f)
      : lr_(lr), beta1_(beta1), beta2_(beta2), eps_(eps) {
    lowbit::detail::require(std::isfinite(lr) && lr > 0, "lr: expected > 0, got {}", lr);
    lowbit::detail::require(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1,
                            "beta1/beta2: expected in [0, 1)");
  }

  void set_lr(float lr) { lr_ = lr; }
  float lr() const { return lr_; }
  int steps() const { return t_; }

  /// One update of every slot: p -= lr * m_hat / (sqrt(v_hat) + eps).
  void step(const std::vector<Slot>& slots) {
    if (m_.empty()) {
      for (const auto& s : slots) {
        m_.emplace_back(s.size, 0.0f);
        v_.emplace_back(s.size, 0.0f);
      }
    }
    lowbit::detail::require(slots.size() == m_.size(), "slots: expected {} entries, got {}",
                            m_.size(), slots.size());
    ++t_;
    const float c1 = 1.0f - std::pow(beta1_, float(t_)), c2 = 1.0f - std::pow(beta2_, float(t_));
    for (std::size_t k = 0; k < slots.size(); ++k) {
      const auto& s = slots[k];
      lowbit::detail::require(s.size == m_[k].size(), "slots[{}]: expected {} values, got {}", k,
                              m_[k].size(), s.size);
      const float lr = lr_ * s.lr_scale;
      float* m = m_[k].data();
      float* v = v_[k].data();
      for (std::size_t i = 0; i < s.size; ++i) {
        const float gi = s.grad[i];
        m[i] = beta1_ * m[i] + (1 - beta1_) * gi;
        v[i] = beta2_ * v[i] + (1 - beta2_) * gi * gi;
        s.param[i] -= lr * (m[i] / c1) / (std::sqrt(v[i] / c2) + eps_);
      }
    }
  }

 private:
  float lr_, beta1_, beta2_, eps_;
  int t_ = 0;
  std::vector<std::vector<float>> m_, v_;
};

}  // namespace llama::train
