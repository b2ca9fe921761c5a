// qat_mlp.cpp: trains an MLP from scratch on a teacher network's outputs, then compares FP32, PTQ
// (RTN, γ-search) and QAT (STE fine-tuning, LSQ) at INT4/INT3/INT2 weights with INT8 activations.
#include <lowbit/core/metrics.hpp>
#include <lowbit/core/quantize.hpp>
#include <lowbit/core/quantized_matrix.hpp>
#include <lowbit/core/scheme.hpp>
#include <lowbit/ptq/gamma_search.hpp>
#include <lowbit/ptq/rtn.hpp>
#include <lowbit/qat/fake_quant_module.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace {

using lowbit::Index;
using lowbit::MatrixXfR;
using lowbit::QuantParams;
using lowbit::Scheme;
namespace qat = lowbit::qat;
using RowVec = Eigen::Matrix<float, 1, Eigen::Dynamic>;

// ---- a small MLP: Linear -> ReLU -> Linear -> ReLU -> Linear, weights [out, in] -------------

struct Linear {
  MatrixXfR W;
  RowVec b;
};

struct Mlp {
  std::vector<Linear> layers;
};

MatrixXfR gaussian(Index rows, Index cols, float sd, std::mt19937& rng) {
  std::normal_distribution<float> n(0.0f, sd);
  MatrixXfR m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
  return m;
}

Mlp make_mlp(const std::vector<Index>& sizes, float gain, std::mt19937& rng) {
  Mlp m;
  for (size_t l = 0; l + 1 < sizes.size(); ++l)
    m.layers.push_back({gaussian(sizes[l + 1], sizes[l], gain / std::sqrt(float(sizes[l])), rng),
                        RowVec::Zero(sizes[l + 1])});
  return m;
}

// The teacher: a random tanh network whose outputs the student learns.
MatrixXfR teacher_forward(const Mlp& t, const MatrixXfR& x) {
  MatrixXfR h = x;
  for (size_t l = 0; l < t.layers.size(); ++l) {
    MatrixXfR z = h * t.layers[l].W.transpose();
    z.rowwise() += t.layers[l].b;
    h = l + 1 < t.layers.size() ? MatrixXfR(z.array().tanh()) : z;
  }
  return h;
}

// Fake-quant hooks of one model: INT8 activations at every layer input, low-bit weights.
struct Hooks {
  std::vector<qat::FakeQuant> act, weight;
};

// Forward and backward with optional hooks; keeps what backward needs.
class Trainer {
 public:
  Trainer(Mlp& m, Hooks* hooks) : m_(m), hooks_(hooks) {}

  const MatrixXfR& forward(const MatrixXfR& x) {
    const size_t L = m_.layers.size();
    a_.resize(L);
    wq_.resize(L);
    z_.resize(L);
    const MatrixXfR* h = &x;
    for (size_t l = 0; l < L; ++l) {
      if (hooks_) {
        hooks_->act[l].forward_into(*h, a_[l]);
        hooks_->weight[l].forward_into(m_.layers[l].W, wq_[l]);
      } else {
        a_[l] = *h;
        wq_[l] = m_.layers[l].W;
      }
      z_[l].noalias() = a_[l] * wq_[l].transpose();
      z_[l].rowwise() += m_.layers[l].b;
      if (l + 1 < L) z_[l] = z_[l].cwiseMax(0.0f);  // ReLU in place: z > 0 marks the mask
      h = &z_[l];
    }
    return z_[L - 1];
  }

  // dW and db per layer from d loss / d output.
  void backward(const MatrixXfR& dy, std::vector<MatrixXfR>& dW, std::vector<RowVec>& db) {
    const size_t L = m_.layers.size();
    dW.resize(L);
    db.resize(L);
    dz_ = dy;
    for (size_t l = L; l-- > 0;) {
      if (l + 1 < L) dz_ = (z_[l].array() > 0.0f).select(dz_, 0.0f);
      dwq_.noalias() = dz_.transpose() * a_[l];
      db[l] = dz_.colwise().sum();
      if (hooks_)
        hooks_->weight[l].backward_into(dwq_, dW[l]);
      else
        dW[l] = dwq_;
      if (l == 0) break;
      da_.noalias() = dz_ * wq_[l];
      if (hooks_)
        hooks_->act[l].backward_into(da_, dz_);
      else
        dz_ = da_;
    }
  }

 private:
  Mlp& m_;
  Hooks* hooks_;
  std::vector<MatrixXfR> a_, wq_, z_;
  MatrixXfR dz_, dwq_, da_;
};

// ---- Adam over a list of float arrays --------------------------------------------------------

class Adam {
 public:
  explicit Adam(float lr) : lr_(lr) {}
  void add(float* p, Index n) { slots_.push_back({p, n, std::vector<float>(size_t(n), 0.0f), std::vector<float>(size_t(n), 0.0f)}); }
  // grads[i] matches the i-th added array; lr_scale implements the schedule.
  void step(const std::vector<const float*>& grads, float lr_scale) {
    ++t_;
    const float c1 = 1.0f - std::pow(0.9f, float(t_)), c2 = 1.0f - std::pow(0.999f, float(t_));
    for (size_t s = 0; s < slots_.size(); ++s) {
      Slot& k = slots_[s];
      for (Index i = 0; i < k.n; ++i) {
        const float g = grads[s][i];
        float& m = k.m[size_t(i)];
        float& v = k.v[size_t(i)];
        m = 0.9f * m + 0.1f * g;
        v = 0.999f * v + 0.001f * g * g;
        k.p[i] -= lr_ * lr_scale * (m / c1) / (std::sqrt(v / c2) + 1e-8f);
      }
    }
  }

 private:
  struct Slot {
    float* p;
    Index n;
    std::vector<float> m, v;
  };
  float lr_;
  int t_ = 0;
  std::vector<Slot> slots_;
};

struct Data {
  MatrixXfR x, y;
};

float cosine(int step, int steps) {
  return 0.5f * (1.0f + std::cos(3.14159265f * float(step) / float(steps)));
}

// Trains m (and, with hooks in learning mode, their scales and zero points) with Adam on the
// mean squared error, a fixed-seed minibatch order and a cosine learning-rate schedule.
void train(Mlp& m, Hooks* hooks, const Data& d, int steps, Index batch, float lr, float qparam_lr,
           unsigned seed) {
  Trainer tr(m, hooks);
  Adam adam(lr), adam_q(qparam_lr);
  for (auto& layer : m.layers) {
    adam.add(layer.W.data(), layer.W.size());
    adam.add(layer.b.data(), layer.b.size());
  }
  std::vector<qat::FakeQuant*> learned;
  if (hooks)
    for (auto* group : {&hooks->weight, &hooks->act})
      for (auto& fq : *group)
        if (fq.learning_enabled()) {
          learned.push_back(&fq);
          adam_q.add(fq.scale().data(), Index(fq.scale().size()));
          adam_q.add(fq.zero_point().data(), Index(fq.zero_point().size()));
        }
  std::mt19937 rng(seed);
  std::uniform_int_distribution<Index> pick(0, d.x.rows() - 1);
  MatrixXfR xb(batch, d.x.cols()), yb(batch, d.y.cols());
  std::vector<MatrixXfR> dW;
  std::vector<RowVec> db;
  std::vector<const float*> grads, qgrads;
  for (int step = 0; step < steps; ++step) {
    for (Index i = 0; i < batch; ++i) {
      const Index k = pick(rng);
      xb.row(i) = d.x.row(k);
      yb.row(i) = d.y.row(k);
    }
    for (auto* fq : learned) fq->zero_grad();
    const MatrixXfR& out = tr.forward(xb);
    const MatrixXfR dy = (2.0f / float(out.size())) * (out - yb);
    tr.backward(dy, dW, db);
    grads.clear();
    for (size_t l = 0; l < m.layers.size(); ++l) {
      grads.push_back(dW[l].data());
      grads.push_back(db[l].data());
    }
    const float sched = cosine(step, steps);
    adam.step(grads, sched);
    if (!learned.empty()) {
      qgrads.clear();
      for (auto* fq : learned) {
        qgrads.push_back(fq->grad_scale().data());
        qgrads.push_back(fq->grad_zero_point().data());
      }
      adam_q.step(qgrads, sched);
    }
  }
}

// ---- evaluation: inference with exported QuantParams -----------------------------------------

struct Exported {
  std::vector<QuantParams> act, weight;  // empty: FP32
};

Exported export_params(const Hooks& h) {
  Exported e;
  for (const auto& fq : h.act) e.act.push_back(fq.params());
  for (const auto& fq : h.weight) e.weight.push_back(fq.params());
  return e;
}

// Test MSE of the model whose weights and activations are quantized with `q` (INT8 codes of
// activations, low-bit codes of weights: dequantize(quantize(.)) everywhere, as inference does).
double evaluate(const Mlp& m, const Exported& q, const Data& d) {
  MatrixXfR h = d.x;
  for (size_t l = 0; l < m.layers.size(); ++l) {
    MatrixXfR a = q.act.empty() ? h : lowbit::dequantize(lowbit::quantize(h, q.act[l]), q.act[l]);
    const MatrixXfR W = q.weight.empty()
                            ? m.layers[l].W
                            : lowbit::dequantize(lowbit::quantize(m.layers[l].W, q.weight[l]), q.weight[l]);
    MatrixXfR z = a * W.transpose();
    z.rowwise() += m.layers[l].b;
    h = l + 1 < m.layers.size() ? MatrixXfR(z.cwiseMax(0.0f)) : z;
  }
  return lowbit::mse(d.y, h);
}

// Layer inputs of the FP32 model on x (for activation ranges and γ-search calibration).
std::vector<MatrixXfR> layer_inputs(const Mlp& m, const MatrixXfR& x) {
  std::vector<MatrixXfR> in{x};
  for (size_t l = 0; l + 1 < m.layers.size(); ++l) {
    MatrixXfR z = in.back() * m.layers[l].W.transpose();
    z.rowwise() += m.layers[l].b;
    in.push_back(z.cwiseMax(0.0f));
  }
  return in;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"QAT vs PTQ on an MLP trained from scratch on a teacher network"};
  unsigned seed = 7;
  int steps = 4000, qat_steps = 1500;
  Index in = 32, batch = 128, hidden = 128, n_train = 32768, n_test = 4096, n_calib = 1024;
  int group = 32;
  bool asym = false;
  float lr = 1e-2f, qat_lr = 5e-4f, qparam_lr = 1e-3f;
  std::string json_path;
  float teacher_gain = 1.0f;
  app.add_option("--seed", seed, "random seed");
  app.add_option("--steps", steps, "FP32 training steps")->check(CLI::PositiveNumber);
  app.add_option("--qat-steps", qat_steps, "QAT fine-tuning steps per run")->check(CLI::PositiveNumber);
  app.add_option("--inputs", in, "input features of teacher and student")->check(CLI::PositiveNumber);
  app.add_option("--hidden", hidden, "hidden width of the student")->check(CLI::PositiveNumber);
  app.add_option("--teacher-gain", teacher_gain, "teacher weight gain (higher: less linear)")
      ->check(CLI::PositiveNumber);
  app.add_option("--train", n_train, "training samples")->check(CLI::PositiveNumber);
  app.add_option("--group", group, "weight group size (0: per channel)")->check(CLI::NonNegativeNumber);
  app.add_flag("--asym", asym, "asymmetric weight codes (default symmetric)");
  app.add_option("--lr", lr, "FP32 learning rate")->check(CLI::PositiveNumber);
  app.add_option("--qat-lr", qat_lr, "QAT weight learning rate")->check(CLI::PositiveNumber);
  app.add_option("--qparam-lr", qparam_lr, "LSQ scale / zero-point learning rate")->check(CLI::PositiveNumber);
  app.add_option("--json", json_path, "also write the results as JSON to this file");
  CLI11_PARSE(app, argc, argv);
  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t c0 = std::clock();

  // Data: inputs N(0, I), targets from a fixed random teacher, standardised per output.
  const Index out = 8;
  std::mt19937 rng(seed);
  const Mlp teacher = make_mlp({in, 64, 64, out}, teacher_gain, rng);
  Data train_set{gaussian(n_train, in, 1.0f, rng), {}}, test_set{gaussian(n_test, in, 1.0f, rng), {}};
  train_set.y = teacher_forward(teacher, train_set.x);
  test_set.y = teacher_forward(teacher, test_set.x);
  const RowVec mean = train_set.y.colwise().mean();
  const RowVec sd = ((train_set.y.rowwise() - mean).array().square().colwise().mean()).sqrt().matrix();
  for (Data* d : {&train_set, &test_set})
    d->y = ((d->y.rowwise() - mean).array().rowwise() / sd.array()).matrix();

  // FP32 student trained from scratch.
  Mlp fp32 = make_mlp({in, hidden, hidden, out}, std::sqrt(2.0f), rng);
  train(fp32, nullptr, train_set, steps, batch, lr, 0.0f, seed + 1);
  const double fp32_mse = evaluate(fp32, {}, test_set);
  // The same fine-tuning without quantization: what extra training alone gives.
  Mlp tuned = fp32;
  train(tuned, nullptr, train_set, qat_steps, batch, qat_lr, 0.0f, seed + 2);
  const double tuned_mse = evaluate(tuned, {}, test_set);
  const auto t1 = std::chrono::steady_clock::now();

  // INT8 activation ranges: observe the FP32 model on calibration data, then freeze.
  const MatrixXfR calib_x = train_set.x.topRows(std::min(n_calib, n_train));
  const std::vector<MatrixXfR> calib_in = layer_inputs(fp32, calib_x);
  const Scheme act_scheme = Scheme::per_tensor(8, false);
  std::vector<qat::FakeQuant> act;
  for (const auto& a : calib_in) {
    qat::FakeQuant fq(act_scheme);
    fq.enable_static_observation();
    fq.forward(a);
    fq.freeze();
    act.push_back(fq);
  }

  const std::vector<int> widths{4, 3, 2};
  const std::vector<std::string> methods{"PTQ RTN", "PTQ gamma-search", "QAT STE", "QAT LSQ"};
  std::vector<std::vector<double>> result(methods.size(), std::vector<double>(widths.size()));
  for (size_t wi = 0; wi < widths.size(); ++wi) {
    const Scheme ws = group > 0 ? Scheme::per_group(widths[wi], group, !asym)
                                : Scheme::per_channel(widths[wi], !asym);
    Hooks rtn{act, {}}, gam{act, {}};
    for (size_t l = 0; l < fp32.layers.size(); ++l) {
      const MatrixXfR& W = fp32.layers[l].W;
      qat::FakeQuant r(ws), g(ws);
      r.set_params(lowbit::ptq::rtn(W, ws).params);
      // γ per block minimising the layer-output error on the calibration inputs.
      g.set_params(lowbit::ptq::search_gamma(W, ws, calib_in[l]).params);
      rtn.weight.push_back(r);
      gam.weight.push_back(g);
    }
    result[0][wi] = evaluate(fp32, export_params(rtn), test_set);
    result[1][wi] = evaluate(fp32, export_params(gam), test_set);

    // QAT from the FP32 weights and the γ-search params. STE: params frozen, weights learn.
    Mlp ste_model = fp32;
    Hooks ste = gam;
    for (auto& fq : ste.weight) fq.freeze();
    train(ste_model, &ste, train_set, qat_steps, batch, qat_lr, 0.0f, seed + 2);
    result[2][wi] = evaluate(ste_model, export_params(ste), test_set);

    // LSQ: weights, and every scale / zero point (weights and activations) learn.
    Mlp lsq_model = fp32;
    Hooks lsq = gam;
    for (auto* group_hooks : {&lsq.weight, &lsq.act})
      for (auto& fq : *group_hooks) fq.enable_param_learning();
    train(lsq_model, &lsq, train_set, qat_steps, batch, qat_lr, qparam_lr, seed + 2);
    result[3][wi] = evaluate(lsq_model, export_params(lsq), test_set);
  }
  const auto t2 = std::chrono::steady_clock::now();
  const double cpu = double(std::clock() - c0) / CLOCKS_PER_SEC;

  // Report.
  fmt::print("MLP {}-{}-{}-{} (ReLU) trained from scratch on a tanh teacher {}-64-64-{} (gain {}), "
             "seed {}\n", in, hidden, hidden, out, in, out, teacher_gain, seed);
  fmt::print("{} train / {} test samples; targets standardised, so test MSE 1.0 = predicting the mean\n",
             n_train, n_test);
  fmt::print("weights: {} {}; activations: INT8 per-tensor asymmetric (observed, frozen)\n",
             group > 0 ? fmt::format("per-group g{}", group) : std::string("per-channel"),
             asym ? "asymmetric" : "symmetric");
  fmt::print("FP32: {} steps; QAT: {} steps from the FP32 weights and γ-search params\n\n", steps,
             qat_steps);
  fmt::print("{:<20} {:>12} {:>12} {:>12}\n", "test MSE", "INT4", "INT3", "INT2");
  fmt::print("{:<20} {:>12.5f} {:>12.5f} {:>12.5f}\n", "FP32", fp32_mse, fp32_mse, fp32_mse);
  fmt::print("{:<20} {:>12.5f} {:>12.5f} {:>12.5f}\n", "FP32 fine-tuned", tuned_mse, tuned_mse,
             tuned_mse);
  for (size_t k = 0; k < methods.size(); ++k)
    fmt::print("{:<20} {:>12.5f} {:>12.5f} {:>12.5f}\n", methods[k], result[k][0], result[k][1],
               result[k][2]);
  fmt::print("\n");
  bool ok = true;
  for (size_t wi = 0; wi < widths.size(); ++wi) {
    const double best_ptq = std::min(result[0][wi], result[1][wi]);
    const double best_qat = std::min(result[2][wi], result[3][wi]);
    fmt::print("INT{}: best QAT / best PTQ test MSE = {:.3f}\n", widths[wi], best_qat / best_ptq);
    if (widths[wi] <= 3) ok = ok && best_qat < best_ptq;
  }
  const double s_train = std::chrono::duration<double>(t1 - t0).count();
  const double s_rest = std::chrono::duration<double>(t2 - t1).count();
  fmt::print("QAT beats the best PTQ at INT3 and INT2: {}\n", ok ? "yes" : "NO");
  fmt::print("time: FP32 training {:.1f} s, PTQ + QAT {:.1f} s (wall); {:.1f} s CPU in all\n",
             s_train, s_rest, cpu);

  if (!json_path.empty()) {
    nlohmann::json j;
    j["seed"] = seed;
    j["fp32_test_mse"] = fp32_mse;
    for (size_t wi = 0; wi < widths.size(); ++wi)
      for (size_t k = 0; k < methods.size(); ++k)
        j["int" + std::to_string(widths[wi])][methods[k]] = result[k][wi];
    j["qat_beats_ptq_int3_int2"] = ok;
    std::ofstream(json_path) << j.dump(2) << "\n";
  }
  return ok ? 0 : 1;
}
