// test_format_fake_quant.cpp: fake quantization on the exact grids of the GGUF block formats: the
// forward equals the format's decode of the exported blocks bit for bit, starts from blocks are
// exact, codes and sub-block scales are the nearest on the grid (brute force), LSQ gradients
// against central finite differences, and every rejected input.
#include <lowbit/formats/format.hpp>
#include <lowbit/qat/format_fake_quant.hpp>
#include <lowbit/qat/format_params.hpp>

#include <catch2/catch.hpp>

#include "qat_testing.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace fm = lowbit::formats;
using lowbit::qat::FormatParams;

namespace {

// Every block format QAT supports (all but the non-uniform IQ4 grids).
std::vector<const fm::Format*> qat_formats() {
  std::vector<const fm::Format*> out;
  for (const fm::Format& f : fm::detail::kFormats)
    if (!f.levels) out.push_back(&f);
  return out;
}

bool same_bits(const MatrixXfR& a, const MatrixXfR& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * size_t(a.size())) == 0;
}

// Moves every learned value of p randomly (scales by x0.6..1.4, offsets by +-30% of the scale
// times qmax), then projects: parameters training could reach.
void perturb(FormatParams& p, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> f(0.6f, 1.4f), o(-0.3f, 0.3f);
  const fm::Format& fmt = *p.format();
  for (size_t i = 0; i < p.scale.size(); ++i) {
    p.offset[i] += o(rng) * std::fabs(p.scale[i]) * float(fmt.qmax) * (fmt.has_offset ? 1.0f : 0.0f);
    p.scale[i] *= f(rng);
  }
  for (float& d : p.super_scale) d *= f(rng);
  for (float& m : p.super_min) m *= f(rng);
  lowbit::qat::project(p);
}

// Weights with a few awkward rows: N(0, 0.3) with 1% outliers, an all-zero row, a constant
// positive row, huge values near the fp16 limit, tiny values (subnormal fp16 scales).
MatrixXfR awkward_weights(Index rows, Index cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 0.3f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  MatrixXfR w(rows, cols);
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) {
      float v = n(rng);
      if (u(rng) < 0.01f) v *= 20.0f;
      switch (r % 6) {
        case 1: v = 0.0f; break;
        case 2: v = 0.75f; break;
        case 3: v *= 3000.0f; break;
        case 4: v *= 1e-6f; break;
        default: break;
      }
      w(r, c) = v;
    }
  return w;
}

}  // namespace

TEST_CASE("format fake quantization equals the format's decode of the exported blocks, bit for bit") {
  for (const fm::Format* f : qat_formats()) {
    INFO(f->name);
    const Index rows = 12, cols = 2 * f->block_size;
    const MatrixXfR w = awkward_weights(rows, cols, 3);
    for (int variant = 0; variant < 3; ++variant) {
      INFO("variant " << variant);
      FormatParams p = lowbit::qat::format_params_from_weights(f->type, w);
      if (variant == 1) perturb(p, 5);
      if (variant == 2) {  // scales beyond fp16 (saturate), and the latent moved off the grid
        for (size_t i = 0; i < p.scale.size(); i += 7) p.scale[i] = i % 2 ? 1e6f : -1e6f;
        for (size_t i = 0; i < p.super_scale.size(); i += 3) p.super_scale[i] = 7e4f;
        lowbit::qat::project(p);
      }
      const MatrixXfR x = variant == 0 ? w : MatrixXfR(w + 0.05f * random_matrix(rows, cols, 9));
      const MatrixXfR y = lowbit::qat::format_fake_quantize(x, p);
      const std::vector<uint8_t> blocks = lowbit::qat::export_format_blocks(x, p);
      REQUIRE(blocks.size() == size_t(rows) * size_t(fm::row_bytes(f->type, uint64_t(cols))));
      REQUIRE(same_bits(y, fm::decode_matrix(f->type, blocks.data(), rows, cols)));
      // The codes are formats' own nearest codes under the stored parameters.
      for (Index k = 0; k < p.blocks(); ++k) {
        const Index r = k / (cols / f->block_size), c0 = (k % (cols / f->block_size)) * f->block_size;
        std::vector<uint8_t> one(size_t(f->type_size));
        fm::encode_block(*f, &x(r, c0), lowbit::qat::format_block_params(p, k), one.data());
        REQUIRE(std::memcmp(one.data(), blocks.data() + size_t(k) * size_t(f->type_size),
                            one.size()) == 0);
      }
      // In place.
      MatrixXfR z = x;
      lowbit::qat::format_fake_quantize_into(z, p, z);
      REQUIRE(same_bits(z, y));
    }
  }
}

TEST_CASE("format fake quantization picks the nearest code and the nearest sub-block integers (brute force)") {
  for (const fm::Format* f : qat_formats()) {
    INFO(f->name);
    const Index rows = 6, cols = f->block_size;
    const MatrixXfR w = awkward_weights(rows, cols, 4);
    FormatParams p = lowbit::qat::format_params_from_weights(f->type, w);
    perturb(p, 6);
    const MatrixXfR x = w + 0.03f * random_matrix(rows, cols, 10);
    const MatrixXfR y = lowbit::qat::format_fake_quantize(x, p);
    for (Index k = 0; k < p.blocks(); ++k) {
      const fm::BlockParams b = lowbit::qat::format_block_params(p, k);
      const int ns = f->sub_blocks();
      if (f->scale_hi == 0) {
        REQUIRE(b.d == fm::detail::fit_half(p.scale[size_t(k)]));
        if (f->has_offset) REQUIRE(b.m == fm::detail::fit_half(p.offset[size_t(k)]));
      } else {
        REQUIRE(b.d == fm::detail::fit_half(p.super_scale[size_t(k)]));
        const float d = lowbit::half_to_float(b.d), dm = lowbit::half_to_float(b.m);
        for (int j = 0; j < ns; ++j) {
          const float want = p.scale[size_t(k) * size_t(ns) + size_t(j)];
          const float got = std::fabs(d * float(b.scales[size_t(j)]) - want);
          for (int s = f->scale_lo; s <= f->scale_hi; ++s)
            REQUIRE(got <= std::fabs(d * float(s) - want));
          if (f->min_hi == 0) continue;
          const float want_min = -p.offset[size_t(k) * size_t(ns) + size_t(j)];
          const float got_min = std::fabs(dm * float(b.mins[size_t(j)]) - want_min);
          for (int m = 0; m <= f->min_hi; ++m) REQUIRE(got_min <= std::fabs(dm * float(m) - want_min));
        }
      }
      for (int j = 0; j < ns; ++j) {
        const fm::SubBlockParams s = f->sub_block_params(b, j);
        for (int i = j * f->sub_block; i < (j + 1) * f->sub_block; ++i) {
          const Index c = i, r = k;  // one block per row here
          const double err = std::fabs(double(x(r, c)) - double(y(r, c)));
          for (int q = f->qmin; q <= f->qmax; ++q)
            REQUIRE(err <= std::fabs(double(x(r, c)) - double(fm::decode_value(s, q, f->has_offset))));
        }
      }
    }
  }
}

TEST_CASE("format params from blocks reproduce the blocks; from weights reproduce the reference rounding") {
  for (const fm::Format* f : qat_formats()) {
    INFO(f->name);
    const Index rows = 5, cols = 2 * f->block_size;
    const MatrixXfR w = 0.2f * random_matrix(rows, cols, 21);
    std::vector<float> importance(static_cast<size_t>(cols));
    for (size_t i = 0; i < importance.size(); ++i) importance[i] = 0.1f + float(i % 7);
    for (const float* imp : {static_cast<const float*>(nullptr), static_cast<const float*>(importance.data())}) {
      const std::vector<uint8_t> blocks = fm::quantize_matrix(f->type, w, imp);
      // From weights: fake quantization of the weights themselves is the reference rounding.
      const FormatParams pw = lowbit::qat::format_params_from_weights(f->type, w, imp);
      REQUIRE(lowbit::qat::export_format_blocks(w, pw) == blocks);
      // From blocks: the stored parameters come back, and so do the blocks from their decode.
      const FormatParams pb = lowbit::qat::format_params_from_blocks(f->type, blocks.data(), rows, cols);
      lowbit::qat::validate(pb, rows, cols);
      for (Index k = 0; k < pb.blocks(); ++k) {
        fm::BlockParams want;
        int8_t codes[256];
        f->unpack(blocks.data() + size_t(k) * size_t(f->type_size), want, codes);
        REQUIRE(lowbit::qat::format_block_params(pb, k) == want);
      }
      const MatrixXfR decoded = fm::decode_matrix(f->type, blocks.data(), rows, cols);
      REQUIRE(same_bits(lowbit::qat::format_fake_quantize(decoded, pb), decoded));
      REQUIRE(lowbit::qat::export_format_blocks(decoded, pb) == blocks);
    }
  }
}

TEST_CASE("plain types: the storage rounding forward, the identity backward") {
  const MatrixXfR x = 3.0f * random_matrix(4, 70, 30);  // any row length
  for (auto t : {fm::Type::F32, fm::Type::F16, fm::Type::BF16}) {
    INFO(fm::to_string(t));
    const FormatParams p = lowbit::qat::format_params_from_weights(t, x);
    REQUIRE(p.scale.empty());
    const std::vector<uint8_t> bytes = lowbit::qat::export_format_blocks(x, p);
    REQUIRE(bytes == fm::quantize_matrix(t, x));
    REQUIRE(same_bits(lowbit::qat::format_fake_quantize(x, p), fm::decode_matrix(t, bytes.data(), 4, 70)));
    const MatrixXfR gy = random_matrix(4, 70, 31);
    const auto g = lowbit::qat::format_lsq_backward(gy, x, p, 0.5f);
    REQUIRE(g.grad_x == gy);
    REQUIRE(g.grad_scale.empty());
    REQUIRE(lowbit::qat::format_grad_factor(p) == 1.0f);
  }
}

namespace {

// The real fake-quant function of one sub-block in double, with the stored rounding of the
// parameters left out (the straight-through part): s * clamp(nearbyint((x - o) / s)) + o.
double fq(double x, double s, double o, int qmin, int qmax) {
  const double q = std::clamp(std::nearbyint((x - o) / s), double(qmin), double(qmax));
  return s * q + o;
}

// Per sub-block j of a problem: its effective scale/offset and the sums the gradients need.
struct SubBlockFd {
  double fd_scale = 0, fd_offset = 0;      // central differences of sum(gy * fq) in s and o
  double ste_scale = 0, ste_offset = 0;    // LSQ's straight-through terms: -x/s and -1 inside
  double fd_x_max_error = 0;               // STE pass-through: |grad_x - gy * d clamp/dx|
};

// A K-quant or legacy problem whose every element and every learned value sits away from its
// rounding boundaries: x / s = k + u with |u| <= 0.35 (k from qmin - 3 to qmax + 3), learned
// sub-block scales at (sc + v) * d with |v| <= 0.35 (a few beyond the range), fp16-exact d and
// dmin, and legacy scales fp16-exact.
struct Problem {
  FormatParams p;
  MatrixXfR x, gy;
};

Problem make_problem(const fm::Format& f, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-0.35f, 0.35f), mag(0.02f, 0.2f);
  Problem pr;
  const Index rows = 3, cols = 2 * f.block_size;
  pr.p.type = f.type;
  pr.p.rows = rows;
  pr.p.cols = cols;
  const Index n = pr.p.blocks();
  const int ns = f.sub_blocks();
  pr.p.scale.assign(size_t(n * ns), 0.0f);
  pr.p.offset.assign(size_t(n * ns), 0.0f);
  const bool k_quant = f.scale_hi != 0;
  if (k_quant) {
    pr.p.super_scale.assign(size_t(n), 0.0f);
    pr.p.super_min.assign(size_t(n), 0.0f);
  }
  auto half_exact = [](float v) { return lowbit::half_to_float(lowbit::float_to_half(v)); };
  std::uniform_int_distribution<int> sc(f.scale_lo == 0 ? 1 : f.scale_lo + 1, f.scale_hi - 1);
  std::uniform_int_distribution<int> mn(1, std::max(1, f.min_hi - 1));
  for (Index k = 0; k < n; ++k) {
    float d = 0, dm = 0;
    if (k_quant) {
      d = half_exact(mag(rng) / float(std::max(std::abs(f.scale_lo), f.scale_hi)) * (k % 2 && f.scale_lo < 0 ? -1.0f : 1.0f));
      dm = f.min_hi ? half_exact(mag(rng) / float(f.min_hi)) : 0.0f;
      pr.p.super_scale[size_t(k)] = d;
      pr.p.super_min[size_t(k)] = dm;
    }
    for (int j = 0; j < ns; ++j) {
      const size_t idx = size_t(k) * size_t(ns) + size_t(j);
      if (!k_quant) {
        pr.p.scale[idx] = half_exact(mag(rng) * ((k + j) % 3 == 0 ? -1.0f : 1.0f));
        if (f.has_offset) pr.p.offset[idx] = half_exact(-mag(rng) * float(f.qmax) / 2);
        continue;
      }
      int s_int = sc(rng);
      while (s_int == 0) s_int = sc(rng);  // a zero sub-block scale is tested on its own
      // Every fifth sub-block wants a scale beyond the integer range (its sub-scale clips).
      const bool clip = j % 5 == 4;
      pr.p.scale[idx] = d * (float(clip ? f.scale_hi + 3 : s_int) + u(rng));
      if (f.min_hi) {
        const bool clip_min = j % 4 == 3;
        pr.p.offset[idx] = -dm * (float(clip_min ? f.min_hi + 3 : mn(rng)) + u(rng));
      }
    }
  }
  lowbit::qat::validate(pr.p, rows, cols);
  // x from the effective parameters the forward will use.
  pr.x.resize(rows, cols);
  for (Index k = 0; k < n; ++k) {
    const fm::BlockParams b = lowbit::qat::format_block_params(pr.p, k);
    const Index r = k / (cols / f.block_size), c0 = (k % (cols / f.block_size)) * f.block_size;
    for (int j = 0; j < ns; ++j) {
      const fm::SubBlockParams s = f.sub_block_params(b, j);
      std::uniform_int_distribution<int> code(f.qmin - 3, f.qmax + 3);
      for (int i = j * f.sub_block; i < (j + 1) * f.sub_block; ++i)
        pr.x(r, c0 + i) = (float(code(rng)) + u(rng)) * s.scale + (f.has_offset ? s.offset : 0.0f);
    }
  }
  pr.gy = random_matrix(rows, cols, seed + 1);
  return pr;
}

// Central differences of one sub-block's output in its effective scale and offset, the STE
// terms, and the STE pass-through check for x, given the analytic grad_x.
SubBlockFd sub_block_fd(const fm::Format& f, const Problem& pr, const MatrixXfR& grad_x, Index k,
                        int j) {
  SubBlockFd out;
  const fm::BlockParams b = lowbit::qat::format_block_params(pr.p, k);
  const fm::SubBlockParams s = f.sub_block_params(b, j);
  const double S = s.scale, O = f.has_offset ? s.offset : 0.0;
  const double hs = 1e-5 * std::fabs(S), ho = 1e-5 * std::fabs(S);
  const Index cols = pr.p.cols, r = k / (cols / f.block_size), c0 = (k % (cols / f.block_size)) * f.block_size;
  for (int i = j * f.sub_block; i < (j + 1) * f.sub_block; ++i) {
    const double x = pr.x(r, c0 + i), g = pr.gy(r, c0 + i);
    out.fd_scale += g * (fq(x, S + hs, O, f.qmin, f.qmax) - fq(x, S - hs, O, f.qmin, f.qmax)) / (2 * hs);
    out.fd_offset += g * (fq(x, S, O + ho, f.qmin, f.qmax) - fq(x, S, O - ho, f.qmin, f.qmax)) / (2 * ho);
    const double t = (x - O) / S;
    const bool inside = std::nearbyint(t) >= f.qmin && std::nearbyint(t) <= f.qmax;
    if (inside) {
      out.ste_scale += g * (-t);
      out.ste_offset += -g;
    }
    // STE pass-through: the derivative in x of the function with the rounding replaced by the
    // identity, s * clamp((x - o) / s, qmin - 1/2, qmax + 1/2) + o (the gradient passes where
    // the rounded code is in range, as PyTorch's mask), by central differences.
    const auto ste_fn = [&](double v) {
      return S * std::clamp((v - O) / S, f.qmin - 0.5, f.qmax + 0.5) + O;
    };
    const double hx = 1e-4 * std::fabs(S);
    const double dx = (ste_fn(x + hx) - ste_fn(x - hx)) / (2 * hx);
    out.fd_x_max_error = std::max(out.fd_x_max_error, std::fabs(double(grad_x(r, c0 + i)) - g * dx));
  }
  return out;
}

}  // namespace

TEST_CASE("format LSQ gradients match central finite differences (legacy and K-quant grids)") {
  for (const fm::Format* f : qat_formats()) {
    INFO(f->name);
    const Problem pr = make_problem(*f, 40);
    const float factor = 0.37f;
    const auto g = lowbit::qat::format_lsq_backward(pr.gy, pr.x, pr.p, factor);
    REQUIRE(g.grad_scale.size() == pr.p.scale.size());
    REQUIRE(g.grad_offset.size() == pr.p.offset.size());
    REQUIRE(g.grad_super_scale.size() == pr.p.super_scale.size());
    REQUIRE(g.grad_super_min.size() == pr.p.super_min.size());
    REQUIRE(g.grad_x == lowbit::qat::format_fake_quantize_backward(pr.gy, pr.x, pr.p));
    const int ns = f->sub_blocks();
    for (Index k = 0; k < pr.p.blocks(); ++k) {
      const fm::BlockParams b = lowbit::qat::format_block_params(pr.p, k);
      double want_d = 0, want_dm = 0;
      // d (and dmin) by central differences of the real output as a function of d, through the
      // real rounding of the sub-block integers (locally constant here), fp16 straight through.
      const double d = lowbit::half_to_float(b.d), dm = lowbit::half_to_float(b.m);
      double fd_d = 0, fd_dm = 0;
      if (f->scale_hi != 0) {
        const Index cols = pr.p.cols, r = k / (cols / f->block_size);
        const Index c0 = (k % (cols / f->block_size)) * f->block_size;
        auto loss = [&](double dd, double ddm) {
          double l = 0;
          for (int j = 0; j < ns; ++j) {
            const size_t idx = size_t(k) * size_t(ns) + size_t(j);
            const double sc = std::clamp(std::nearbyint(pr.p.scale[idx] / dd), double(f->scale_lo), double(f->scale_hi));
            const double mn = f->min_hi ? std::clamp(std::nearbyint(-pr.p.offset[idx] / ddm), 0.0, double(f->min_hi)) : 0.0;
            for (int i = j * f->sub_block; i < (j + 1) * f->sub_block; ++i)
              l += pr.gy(r, c0 + i) * fq(pr.x(r, c0 + i), dd * sc, -ddm * mn, f->qmin, f->qmax);
          }
          return l;
        };
        const double h = 1e-6 * std::fabs(d);
        fd_d = (loss(d + h, dm) - loss(d - h, dm)) / (2 * h);
        if (f->min_hi) {
          const double hm = 1e-6 * dm;
          fd_dm = (loss(d, dm + hm) - loss(d, dm - hm)) / (2 * hm);
        }
        want_d = fd_d;
        want_dm = fd_dm;
      }
      for (int j = 0; j < ns; ++j) {
        const size_t idx = size_t(k) * size_t(ns) + size_t(j);
        const SubBlockFd s = sub_block_fd(*f, pr, g.grad_x, k, j);
        INFO("block " << k << " sub-block " << j);
        CHECK(s.fd_x_max_error < 1e-6);
        const double g_scale = s.fd_scale + s.ste_scale;   // d loss / d effective scale (LSQ)
        const double g_offset = s.fd_offset + s.ste_offset;  // d loss / d effective offset
        if (f->scale_hi == 0) {
          CHECK(g.grad_scale[idx] == Approx(factor * g_scale).margin(1e-4).epsilon(1e-4));
          if (f->has_offset)
            CHECK(g.grad_offset[idx] == Approx(factor * g_offset).margin(1e-4).epsilon(1e-4));
          continue;
        }
        const double tau = pr.p.scale[idx] / d;
        const bool inside = std::nearbyint(tau) >= f->scale_lo && std::nearbyint(tau) <= f->scale_hi;
        CHECK(g.grad_scale[idx] == Approx(inside ? factor * g_scale : 0.0).margin(1e-4).epsilon(1e-4));
        // The STE terms d adds to the real derivative: the codes' (sc * ste) and the
        // sub-scales' own (-tau * g_scale inside).
        want_d += double(b.scales[size_t(j)]) * s.ste_scale - (inside ? tau * g_scale : 0.0);
        if (f->min_hi) {
          const double mu = -pr.p.offset[idx] / dm;
          const bool in_min = std::nearbyint(mu) >= 0 && std::nearbyint(mu) <= f->min_hi;
          CHECK(g.grad_offset[idx] == Approx(in_min ? factor * g_offset : 0.0).margin(1e-4).epsilon(1e-4));
          want_dm += -double(b.mins[size_t(j)]) * s.ste_offset + (in_min ? mu * g_offset : 0.0);
        }
      }
      if (f->scale_hi != 0) {
        INFO("block " << k);
        CHECK(g.grad_super_scale[size_t(k)] == Approx(factor * want_d).margin(1e-3).epsilon(1e-4));
        if (f->min_hi)
          CHECK(g.grad_super_min[size_t(k)] == Approx(factor * want_dm).margin(1e-3).epsilon(1e-4));
      }
    }
  }
}

TEST_CASE("format LSQ: a zero scale passes no gradient to x and pulls the scale by the end codes") {
  // Q4_0 block with d = 0: every x decodes to 0; leaving 0 upwards, positive x clamp to 7 and
  // negative x to -8.
  FormatParams p;
  p.type = fm::Type::Q4_0;
  p.rows = 1;
  p.cols = 32;
  p.scale = {0.0f};
  p.offset = {0.0f};
  MatrixXfR x(1, 32), gy(1, 32);
  double want = 0;
  for (int i = 0; i < 32; ++i) {
    x(0, i) = float(i - 16) * 0.1f;
    gy(0, i) = 0.5f + float(i % 3);
    want += double(gy(0, i)) * (i > 16 ? 7.0 : (i < 16 ? -8.0 : 0.0));
  }
  const auto g = lowbit::qat::format_lsq_backward(gy, x, p);
  CHECK(g.grad_scale[0] == Approx(want));
  for (int i = 0; i < 32; ++i) CHECK(g.grad_x(0, i) == (i == 16 ? gy(0, i) : 0.0f));
  CHECK((lowbit::qat::format_fake_quantize(x, p).array() == 0.0f).all());
}

TEST_CASE("format params: project keeps the learned values storable") {
  FormatParams p = lowbit::qat::format_params_from_weights(fm::Type::Q4_K, 0.1f * random_matrix(2, 256, 50));
  p.scale[0] = -1.0f;
  p.offset[1] = 0.5f;
  p.super_scale[0] = -0.1f;
  p.super_min[1] = -0.2f;
  p.scale[2] = 1e9f;
  lowbit::qat::project(p);
  CHECK(p.scale[0] == 0.0f);
  CHECK(p.offset[1] == 0.0f);
  CHECK(p.super_scale[0] == 0.0f);
  CHECK(p.super_min[1] == 0.0f);
  CHECK(p.scale[2] == 65504.0f);
  FormatParams s = lowbit::qat::format_params_from_weights(fm::Type::Q6_K, 0.1f * random_matrix(1, 256, 51));
  s.scale[0] = -0.5f;
  s.super_scale[0] = -0.01f;
  lowbit::qat::project(s);
  CHECK(s.scale[0] == -0.5f);  // signed sub-block scales
  CHECK(s.super_scale[0] == -0.01f);
  FormatParams l = lowbit::qat::format_params_from_weights(fm::Type::Q4_1, 0.1f * random_matrix(1, 32, 52));
  l.scale[0] = -0.5f;
  l.offset[0] = 0.25f;
  lowbit::qat::project(l);
  CHECK(l.scale[0] == -0.5f);
  CHECK(l.offset[0] == 0.25f);
}

TEST_CASE("format fake quantization rejects bad input naming it") {
  const MatrixXfR w = 0.1f * random_matrix(2, 64, 60);
  auto throws_with = [](auto&& fn, const std::string& part) {
    try {
      fn();
      FAIL("expected lowbit::Error");
    } catch (const lowbit::Error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(part) != std::string::npos);
    }
  };
  throws_with([&] { (void)lowbit::qat::format_params_from_weights(fm::Type::IQ4_NL, w); }, "IQ4_NL");
  throws_with([&] { (void)lowbit::qat::format_params_from_weights(fm::Type::Q4_K, w); }, "blocks of 256");
  throws_with([&] { (void)lowbit::qat::format_params_from_weights(fm::Type::Q4_0, MatrixXfR::Zero(2, 172)); },
              "F16");
  throws_with([&] { (void)lowbit::qat::format_params_from_weights(fm::Type::IQ2_XS, w); }, "supported");
  const FormatParams p = lowbit::qat::format_params_from_weights(fm::Type::Q4_K, 0.1f * random_matrix(2, 256, 61));
  const MatrixXfR x = 0.1f * random_matrix(2, 256, 62);
  throws_with([&] { (void)lowbit::qat::format_fake_quantize(w, p); }, "2x256");
  FormatParams bad = p;
  bad.scale.pop_back();
  throws_with([&] { (void)lowbit::qat::format_fake_quantize(x, bad); }, "params.scale");
  bad = p;
  bad.super_min[1] = std::numeric_limits<float>::quiet_NaN();
  throws_with([&] { (void)lowbit::qat::export_format_blocks(x, bad); }, "params.super_min[1]");
  MatrixXfR xn = x;
  xn(1, 3) = std::numeric_limits<float>::infinity();
  throws_with([&] { (void)lowbit::qat::format_fake_quantize(xn, p); }, "x(1, 3)");
  throws_with([&] { (void)lowbit::qat::format_lsq_backward(MatrixXfR::Zero(2, 255), x, p); }, "grad_y");
  MatrixXfR gn = MatrixXfR::Zero(2, 256);
  gn(0, 0) = std::numeric_limits<float>::quiet_NaN();
  throws_with([&] { (void)lowbit::qat::format_lsq_backward(gn, x, p); }, "grad_y");
  throws_with([&] { (void)lowbit::qat::format_lsq_backward(MatrixXfR::Zero(2, 256), x, p, 0.0f); }, "grad_factor");
  const FormatParams h = lowbit::qat::format_params_from_weights(fm::Type::F16, w);
  MatrixXfR big = w;
  big(0, 5) = 1e6f;
  throws_with([&] { (void)lowbit::qat::format_fake_quantize(big, h); }, "overflows F16");
  std::vector<uint8_t> blocks = fm::quantize_matrix(fm::Type::Q8_0, w);
  blocks[34] = 0x00;
  blocks[35] = 0x7C;  // d of block 1 = +inf
  throws_with([&] { (void)lowbit::qat::format_params_from_blocks(fm::Type::Q8_0, blocks.data(), 2, 64); },
              "block 1");
  FormatParams empty;
  throws_with([&] { (void)lowbit::qat::format_grad_factor(empty); }, "non-empty");
  CHECK(lowbit::qat::format_grad_factor(p) == Approx(1.0 / std::sqrt(2.0 * 256.0 * 15.0)));
}
