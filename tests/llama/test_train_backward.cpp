// test_train_backward.cpp: every backward piece of the Llama training pass and the whole model's
// gradient against central finite differences (double precision, tiny random config).
#include "../../examples/llama_train/adam.hpp"
#include "../../examples/llama_train/train.hpp"
#include "tiny_llama.hpp"

#include <catch2/catch.hpp>

#include <functional>
#include <map>
#include <random>

using namespace llama::train;
using MatD = Mat<double>;
using VecD = Vec<double>;

namespace {

MatD random_mat(Index r, Index c, std::mt19937& rng, double sd = 1.0) {
  return tiny::random_mat<double>(r, c, rng, sd);
}
VecD random_vec(Index n, std::mt19937& rng, double mean, double sd) {
  return tiny::random_vec<double>(n, rng, mean, sd);
}

// Central difference of f at data[i].
double numeric(const std::function<double()>& f, double* data, Index i, double h = 1e-5) {
  const double x0 = data[i];
  data[i] = x0 + h;
  const double fp = f();
  data[i] = x0 - h;
  const double fm = f();
  data[i] = x0;
  return (fp - fm) / (2 * h);
}

// Checks every entry of `analytic` against the central difference of f w.r.t. `data`.
void check_all(const std::function<double()>& f, double* data, const double* analytic, Index n,
               double tol = 1e-6) {
  for (Index i = 0; i < n; ++i) {
    const double num = numeric(f, data, i);
    INFO("entry " << i << " analytic " << analytic[i] << " numeric " << num);
    REQUIRE(std::abs(num - analytic[i]) <= tol * (1 + std::abs(num)));
  }
}

double dot(const MatD& a, const MatD& b) { return a.cwiseProduct(b).sum(); }

Params<double> tiny_params(bool tied, std::mt19937& rng) { return tiny::params<double>(tied, rng); }

}  // namespace

TEST_CASE("linear backward matches finite differences") {
  std::mt19937 rng(1);
  MatD x = random_mat(5, 7, rng), w = random_mat(3, 7, rng), up = random_mat(5, 3, rng);
  auto f = [&] { return dot(detail::linear(x, w), up); };
  MatD dw = MatD::Zero(3, 7);
  const MatD dx = detail::linear_backward(up, x, w, dw);
  check_all(f, x.data(), dx.data(), x.size());
  check_all(f, w.data(), dw.data(), w.size());
}

TEST_CASE("rmsnorm backward matches finite differences") {
  std::mt19937 rng(2);
  MatD x = random_mat(4, 9, rng), up = random_mat(4, 9, rng);
  VecD g = random_vec(9, rng, 1.0, 0.5), r;
  auto f = [&] { return dot(detail::rmsnorm(x, g, 1e-5, r), up); };
  detail::rmsnorm(x, g, 1e-5, r);
  VecD dg = VecD::Zero(9);
  const MatD dx = detail::rmsnorm_backward(up, x, g, r, dg);
  check_all(f, x.data(), dx.data(), x.size());
  check_all(f, g.data(), dg.data(), g.size());
  // The forward itself: row 0 against the formula.
  const MatD y = detail::rmsnorm(x, g, 1e-5, r);
  const double ms = x.row(0).squaredNorm() / 9.0;
  REQUIRE(y(0, 3) == Approx(g(3) * x(0, 3) / std::sqrt(ms + 1e-5)).epsilon(1e-12));
}

TEST_CASE("rope rotates adjacent pairs and its backward is the transpose") {
  std::mt19937 rng(3);
  const int hd = 6;
  MatD c, s;
  detail::rope_tables<double>(5, hd, 10000.f, c, s);
  MatD x = random_mat(5, 2 * hd, rng), y = random_mat(5, 2 * hd, rng);
  MatD rx = x;
  detail::rope(rx, hd, c, s, false);
  // Position 3, head 1, pair 2: angle 3 * 10000^(-4/6).
  const double a = 3.0 * std::pow(10000.0, -4.0 / 6.0);
  REQUIRE(rx(3, hd + 4) == Approx(x(3, hd + 4) * std::cos(a) - x(3, hd + 5) * std::sin(a)));
  REQUIRE(rx(3, hd + 5) == Approx(x(3, hd + 4) * std::sin(a) + x(3, hd + 5) * std::cos(a)));
  REQUIRE(rx.row(0).isApprox(x.row(0)));  // position 0 is not rotated
  MatD ry = y;
  detail::rope(ry, hd, c, s, true);
  REQUIRE(dot(rx, y) == Approx(dot(x, ry)).epsilon(1e-12));
  detail::rope(ry, hd, c, s, false);
  REQUIRE(ry.isApprox(y, 1e-12));
}

TEST_CASE("causal GQA attention backward matches finite differences") {
  std::mt19937 rng(4);
  const int nh = 4, nkv = 2, hd = 3;
  const Index S = 5;
  MatD q = random_mat(S, nh * hd, rng), k = random_mat(S, nkv * hd, rng),
       v = random_mat(S, nkv * hd, rng), up = random_mat(S, nh * hd, rng);
  std::vector<MatD> probs;
  auto f = [&] { return dot(detail::attention(q, k, v, nh, nkv, hd, probs), up); };
  const MatD o = detail::attention(q, k, v, nh, nkv, hd, probs);
  // Causality: the first output of head 3 is v's first row of kv head 1.
  REQUIRE(o.block(0, 3 * hd, 1, hd).isApprox(v.block(0, hd, 1, hd)));
  MatD dk = MatD::Zero(S, nkv * hd), dv = MatD::Zero(S, nkv * hd);
  const MatD dq = detail::attention_backward(up, q, k, v, nh, nkv, hd, probs, dk, dv);
  check_all(f, q.data(), dq.data(), q.size());
  check_all(f, k.data(), dk.data(), k.size());
  check_all(f, v.data(), dv.data(), v.size());
}

TEST_CASE("swiglu backward matches finite differences") {
  std::mt19937 rng(5);
  MatD a = random_mat(3, 7, rng, 2.0), b = random_mat(3, 7, rng), up = random_mat(3, 7, rng);
  auto f = [&] { return dot(detail::swiglu(a, b), up); };
  MatD da, db;
  detail::swiglu_backward(up, a, b, da, db);
  check_all(f, a.data(), da.data(), a.size());
  check_all(f, b.data(), db.data(), b.size());
}

TEST_CASE("cross-entropy + distillation gradient matches finite differences") {
  std::mt19937 rng(6);
  MatD z = random_mat(6, 11, rng, 2.0), t = random_mat(6, 11, rng, 2.0);
  const std::vector<int> tokens = {1, 4, 0, 10, 3, 7};
  LossOptions opt;
  opt.ce_weight = 0.7;
  opt.kd_weight = 0.4;
  auto f = [&] {
    LossStats s;
    loss_gradient(z, tokens, &t, opt, 1.0, s);
    return objective(s, opt);
  };
  LossStats s;
  const MatD d = loss_gradient(z, tokens, &t, opt, 1.0, s);
  REQUIRE(s.predictions == 5);
  // CE by hand for position 2 -> token 10 contributes -log softmax(z_2)[10].
  double ce = 0;
  for (Index i = 0; i < 5; ++i)
    ce -= z(i, tokens[size_t(i + 1)]) - std::log(z.row(i).array().exp().sum());
  REQUIRE(s.ce == Approx(ce).epsilon(1e-12));
  REQUIRE(s.kl > 0);
  REQUIRE(d.row(5).isZero());  // the last position predicts nothing
  check_all(f, z.data(), d.data(), z.size());
  // KL of identical logits is zero.
  LossStats s2;
  loss_gradient(z, tokens, &z, opt, 1.0, s2);
  REQUIRE(std::abs(s2.kl) < 1e-12);
}

TEST_CASE("whole-model gradient matches finite differences for every parameter") {
  for (bool tied : {true, false}) {
    INFO("tied " << tied);
    std::mt19937 rng(tied ? 7 : 8);
    Params<double> p = tiny_params(tied, rng);
    const std::vector<int> tokens = {1, 5, 17, 3, 31, 5};
    const MatD teacher = random_mat(6, 32, rng, 1.5);
    LossOptions opt;
    opt.ce_weight = 1.0;
    opt.kd_weight = 0.5;
    auto f = [&] {
      LossStats s;
      loss_gradient(forward(p, tokens), tokens, &teacher, opt, 1.0, s);
      return objective(s, opt);
    };
    Params<double> g = zeros_like(p);
    accumulate_gradient(p, tokens, &teacher, opt, 1.0, g);
    auto pt = tensors(p);
    auto gt = tensors(g);
    REQUIRE(pt.size() == gt.size());
    REQUIRE(pt.size() == size_t(tied ? 2 + 9 * 2 : 3 + 9 * 2));
    for (size_t k = 0; k < pt.size(); ++k) {
      INFO(pt[k].name);
      REQUIRE(gt[k].data != pt[k].data);
      check_all(f, pt[k].data, gt[k].data, pt[k].size, 1e-5);
    }
    // Embedding rows of tokens that never occur get no gradient when untied.
    if (!tied) REQUIRE(g.token_embd.row(2).isZero());
  }
}

TEST_CASE("gradients accumulate over sequences with grad_scale") {
  std::mt19937 rng(9);
  Params<double> p = tiny_params(true, rng);
  const std::vector<int> a = {1, 2, 3, 4}, b = {1, 9, 9};
  Params<double> g1 = zeros_like(p), g2 = zeros_like(p);
  LossOptions opt;
  const auto s1 = accumulate_gradient(p, a, nullptr, opt, 0.5, g1);
  const auto s2 = accumulate_gradient(p, b, nullptr, opt, 0.5, g1);
  accumulate_gradient(p, a, nullptr, opt, 1.0, g2);
  accumulate_gradient(p, b, nullptr, opt, 1.0, g2);
  REQUIRE(s1.predictions + s2.predictions == 5);
  REQUIRE((2 * g1.layers[1].wo).isApprox(g2.layers[1].wo));
  REQUIRE((2 * g1.token_embd).isApprox(g2.token_embd));
}

TEST_CASE("Adam's first step moves each weight by lr against its gradient's sign") {
  std::vector<float> w = {1.0f, -2.0f, 0.5f}, g = {0.3f, -4.0f, 0.0f};
  Adam adam(0.1f);
  adam.step({{w.data(), g.data(), w.size()}});
  REQUIRE(w[0] == Approx(0.9f).epsilon(1e-5));
  REQUIRE(w[1] == Approx(-1.9f).epsilon(1e-5));
  REQUIRE(w[2] == 0.5f);
  // Second step with the same gradient: m_hat = g, v_hat = g^2 again.
  adam.step({{w.data(), g.data(), w.size(), 0.5f}});
  REQUIRE(w[0] == Approx(0.85f).epsilon(1e-5));
  REQUIRE(adam.steps() == 2);
}

TEST_CASE("training entry points reject bad input") {
  std::mt19937 rng(10);
  Params<double> p = tiny_params(true, rng);
  REQUIRE_THROWS_AS(forward(p, {}), lowbit::Error);
  REQUIRE_THROWS_AS(forward(p, {1, 32}), lowbit::Error);
  REQUIRE_THROWS_AS(forward(p, {-1}), lowbit::Error);
  Params<double> bad = p;
  bad.config.n_kv_heads = 3;
  REQUIRE_THROWS_AS(forward(bad, {1, 2}), lowbit::Error);
  bad = p;
  bad.layers.pop_back();
  REQUIRE_THROWS_AS(forward(bad, {1, 2}), lowbit::Error);
  const MatD z = MatD::Zero(3, 32), t = MatD::Zero(2, 32);
  LossStats s;
  LossOptions kd;
  kd.kd_weight = 1.0;
  REQUIRE_THROWS_AS(loss_gradient(z, {1, 2}, nullptr, LossOptions{}, 1.0, s), lowbit::Error);
  REQUIRE_THROWS_AS(loss_gradient(z, {1, 2, 3}, &t, kd, 1.0, s), lowbit::Error);
  REQUIRE_THROWS_AS(loss_gradient(z, {1, 2, 3}, nullptr, kd, 1.0, s), lowbit::Error);
  REQUIRE_THROWS_AS(Adam(0.0f), lowbit::Error);
  REQUIRE_THROWS_AS(Adam(0.1f, 1.0f), lowbit::Error);
  std::vector<float> w(2), g(2);
  Adam adam(0.1f);
  adam.step({{w.data(), g.data(), 2}});
  REQUIRE_THROWS_AS(adam.step({{w.data(), g.data(), 1}}), lowbit::Error);
}

TEST_CASE("output-gradient hook reports d(loss)/d(output) of every Linear") {
  std::mt19937 rng(15);
  Params<double> p = tiny_params(true, rng);
  const std::vector<int> tokens = {1, 4, 8, 15, 16, 23};
  std::map<std::string, MatD> dys;
  Params<double> g = zeros_like(p);
  Cache<double> cache;
  const MatD logits = forward(p, tokens, &cache);
  LossStats s;
  const MatD d = loss_gradient(logits, tokens, nullptr, LossOptions{}, 1.0, s);
  backward(p, cache, d, g, [&](const std::string& n, const MatD& dy) { dys[n] = dy; });
  REQUIRE(dys.size() == 2 * 7 + 2);  // 7 Linears a block, the head, and the embedded tokens
  REQUIRE(dys.count("token_embd") == 1);
  // dW = dy^T x for every Linear, with x the cached input.
  const auto& K = cache.layers[1];
  REQUIRE((dys["blk.1.ffn_down"].transpose() * K.m).isApprox(g.layers[1].w_down));
  REQUIRE((dys["blk.1.ffn_up"].transpose() * K.h2).isApprox(g.layers[1].w_up));
  REQUIRE((dys["blk.1.ffn_gate"].transpose() * K.h2).isApprox(g.layers[1].w_gate));
  REQUIRE((dys["blk.1.attn_output"].transpose() * K.o).isApprox(g.layers[1].wo));
  REQUIRE((dys["blk.1.attn_v"].transpose() * K.h1).isApprox(g.layers[1].wv));
  REQUIRE((dys["blk.1.attn_k"].transpose() * K.h1).isApprox(g.layers[1].wk));
  REQUIRE((dys["blk.1.attn_q"].transpose() * K.h1).isApprox(g.layers[1].wq));
  REQUIRE(dys["output"].isApprox(d));
}
