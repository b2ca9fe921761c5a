// test_format_ptq.cpp: the weight algorithms on the exact grids of GGUF formats (format_rtn,
// format_gamma, format_gptq, format_awq): quality on a synthetic LLM-like layer against the
// format's plain rounding and its importance-weighted rounding (llama.cpp's imatrix), on
// calibration and held-out tokens; exact encode/decode; determinism; rejected inputs.
#include <lowbit/formats/format.hpp>
#include <lowbit/ptq/format_awq.hpp>
#include <lowbit/ptq/format_gamma.hpp>
#include <lowbit/ptq/format_gptq.hpp>
#include <lowbit/ptq/format_rtn.hpp>

#include <catch2/catch.hpp>

#include "synthetic.hpp"

#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

using namespace lowbit;
using formats::Type;

namespace {

using test::kIn;
using test::kOut;
using test::layer;
using test::SyntheticLayer;

struct Errors {
  double cal, held;
};

Errors errors(const ptq::FormatResult& r) {
  const SyntheticLayer& l = layer();
  const MatrixXfR w = r.dequantize();
  return {ptq::output_error(l.W, w, l.cal), ptq::output_error(l.W, w, l.held)};
}

Errors errors(const MatrixXfR& w) {
  const SyntheticLayer& l = layer();
  return {ptq::output_error(l.W, w, l.cal), ptq::output_error(l.W, w, l.held)};
}

}  // namespace

TEST_CASE("format GPTQ into Q4_K, Q3_K and Q6_K beats the plain and the imatrix-weighted rounding (calibration and held-out)") {
  const SyntheticLayer& l = layer();
  std::printf("synthetic layer %ldx%ld, 2048 calibration / 2048 held-out tokens: output error "
              "relative to the format's plain rounding (cal / held-out)\n",
              long(kOut), long(kIn));
  std::printf("  %-6s %-15s %-15s %-15s %-15s %-15s\n", "format", "imatrix rtn", "gamma (output)",
              "AWQ", "GPTQ", "GPTQ no clip");
  for (Type t : {Type::Q4_K, Type::Q3_K, Type::Q6_K, Type::Q2_K, Type::Q5_K, Type::Q4_0,
                 Type::Q4_1, Type::Q5_0, Type::Q8_0}) {
    INFO(formats::to_string(t));
    const Errors plain = errors(ptq::format_rtn(l.W, t, l.cal));
    ptq::FormatRtnOptions w;
    w.weighted = true;
    const Errors weighted = errors(ptq::format_rtn(l.W, t, l.cal, w));
    const Errors gamma = errors(ptq::format_gamma(l.W, t, l.cal));
    const Errors awq = errors(ptq::format_awq(l.W, t, l.cal).effective_weight());
    const Errors gptq = errors(ptq::format_gptq(l.W, t, l.cal));
    ptq::FormatGptqOptions nc;
    nc.clip_search = false;
    const Errors gptq_nc = errors(ptq::format_gptq(l.W, t, l.cal, nc));
    const auto rel = [&](const Errors& e) {
      return fmt::format("{:.3f} / {:.3f}", e.cal / plain.cal, e.held / plain.held);
    };
    std::printf("  %-6s %-15s %-15s %-15s %-15s %-15s\n", formats::to_string(t).c_str(),
                rel(weighted).c_str(), rel(gamma).c_str(), rel(awq).c_str(), rel(gptq).c_str(),
                rel(gptq_nc).c_str());
    // The bar: GPTQ below the plain rounding and the imatrix-weighted rounding, on both sets.
    CHECK(gptq.cal < plain.cal);
    CHECK(gptq.held < plain.held);
    CHECK(gptq.cal < weighted.cal);
    CHECK(gptq.held < weighted.held);
    if (t == Type::Q4_K || t == Type::Q3_K || t == Type::Q6_K) {
      CHECK(gptq.held < 0.5 * weighted.held);  // by a wide margin on this layer
    }
    // γ-search (output error) starts from the imatrix-style search and never does worse on
    // calibration; AWQ and γ-search beat the plain rounding.
    CHECK(gamma.cal < plain.cal);
    CHECK(awq.cal < plain.cal);
    CHECK(gamma.held < plain.held);
    CHECK(awq.held < plain.held);
  }
}

TEST_CASE("format GPTQ bytes are formats::pack of what it chose: decode equals the values its error feedback used") {
  const SyntheticLayer& l = layer();
  for (const formats::Format& f : formats::detail::kFormats) {
    INFO(f.name);
    MatrixXfR used;
    const ptq::FormatResult r = ptq::format_gptq(l.W.topRows(40), f.type, l.cal, {}, &used);
    REQUIRE(r.bytes() == 40 * formats::row_bytes(f.type, kIn));
    const MatrixXfR dec = r.dequantize();
    CHECK(std::memcmp(dec.data(), used.data(), size_t(dec.size()) * 4) == 0);
    // Every block: unpack/pack is the identity, decode is decode_value of its parameters and
    // codes, and re-encoding the decoded values under the same parameters gives the same bytes.
    std::vector<uint8_t> again(size_t(f.type_size));
    std::vector<int8_t> codes(size_t(f.block_size));
    std::vector<float> vals(size_t(f.block_size));
    for (size_t off = 0; off < r.data.size(); off += size_t(f.type_size)) {
      formats::BlockParams p;
      f.unpack(r.data.data() + off, p, codes.data());
      f.pack(p, codes.data(), again.data());
      REQUIRE(std::memcmp(again.data(), r.data.data() + off, again.size()) == 0);
      f.decode(r.data.data() + off, vals.data());
      for (int i = 0; i < f.block_size; ++i) {
        const float v = formats::decode_value(f.sub_block_params(p, i / f.sub_block), codes[size_t(i)],
                                              f.has_offset);
        REQUIRE(std::memcmp(&v, &vals[size_t(i)], 4) == 0);
      }
      bool distinct = true;  // re-encoding is exact when no sub-block scale is zero
      for (int j = 0; j < f.sub_blocks(); ++j) distinct &= f.sub_block_params(p, j).scale != 0.0f;
      if (distinct) {
        formats::encode_block(f, vals.data(), p, again.data());
        REQUIRE(std::memcmp(again.data(), r.data.data() + off, again.size()) == 0);
      }
    }
  }
}

TEST_CASE("format_rtn is the format's own rounding (plain and imatrix-weighted)") {
  const SyntheticLayer& l = layer();
  const std::vector<float> imp = ptq::detail::column_importance(l.cal);
  for (const formats::Format& f : formats::detail::kFormats) {
    INFO(f.name);
    const ptq::FormatResult plain = ptq::format_rtn(l.W, f.type);
    CHECK(plain.data == formats::quantize_matrix(f.type, l.W));
    CHECK(std::isnan(plain.report.output_mse));
    ptq::FormatRtnOptions w;
    w.weighted = true;
    const ptq::FormatResult weighted = ptq::format_rtn(l.W, f.type, l.cal, w);
    CHECK(weighted.data == formats::quantize_matrix(f.type, l.W, imp.data()));
    CHECK(weighted.report.output_mse == Approx(ptq::output_error(l.W, weighted.dequantize(), l.cal)));
    CHECK(plain.bits_per_weight() == Approx(8.0 * f.type_size / f.block_size));
  }
}

TEST_CASE("format GPTQ with a diagonal Hessian and no clip search is the plain rounding, byte for byte") {
  // With uncorrelated inputs U is diagonal: no error feedback, and γ = 1 is the plain rule.
  const SyntheticLayer& l = layer();
  Eigen::MatrixXd g = Eigen::MatrixXd::Zero(kIn, kIn);
  for (Index c = 0; c < kIn; ++c) g(c, c) = 1.0 + double(c % 7);
  const ptq::Calibration diag = ptq::Calibration::from_gram(g, 100);
  ptq::FormatGptqOptions o;
  o.clip_search = false;
  for (const formats::Format& f : formats::detail::kFormats) {
    INFO(f.name);
    CHECK(ptq::format_gptq(l.W.topRows(64), f.type, diag, o).data ==
          formats::quantize_matrix(f.type, l.W.topRows(64)));
    // The γ-search with only γ = 1 is the plain rounding too.
    ptq::FormatGammaOptions go;
    go.clip.steps = 1;
    go.metric = ptq::ErrorMetric::weight;
    CHECK(ptq::format_gamma(l.W.topRows(64), f.type, go).data ==
          formats::quantize_matrix(f.type, l.W.topRows(64)));
  }
}

TEST_CASE("format GPTQ and γ-search give the same bytes for any thread count and in parts of rows") {
  const SyntheticLayer& l = layer();
  const MatrixXfR W = test::heavy_tailed_weight(600, kIn, 105);  // three chunks of rows, one partial
  for (Type t : {Type::Q4_K, Type::Q5_0}) {
    ptq::FormatGptqOptions one, two;
    one.threads = 1;
    two.threads = 2;
    const auto a = ptq::format_gptq(W, t, l.cal, one);
    const auto b = ptq::format_gptq(W, t, l.cal, two);
    CHECK(a.data == b.data);
    // Rows quantized in two parts with one factor give the same bytes as all at once.
    const ptq::GptqFactor F = ptq::gptq_factor(l.cal, one);
    const size_t rb = size_t(formats::row_bytes(t, kIn));
    std::vector<uint8_t> parts(600 * rb);
    ptq::format_gptq_rows(W.topRows(300), t, F, one, parts.data());
    ptq::format_gptq_rows(W.bottomRows(300), t, F, two, parts.data() + 300 * rb);
    CHECK(parts == a.data);
    ptq::FormatGammaOptions g1, g2;
    g1.threads = 1;
    g2.threads = 2;
    CHECK(ptq::format_gamma(W, t, l.cal, g1).data == ptq::format_gamma(W, t, l.cal, g2).data);
  }
}

TEST_CASE("format γ-search: the output metric is never worse on calibration than its importance start") {
  const SyntheticLayer& l = layer();
  for (Type t : {Type::Q4_K, Type::Q3_K, Type::Q4_0, Type::Q5_1, Type::IQ4_NL}) {
    INFO(formats::to_string(t));
    ptq::FormatGammaOptions imp;
    imp.metric = ptq::ErrorMetric::importance;
    const double e_imp = ptq::format_gamma(l.W, t, l.cal, imp).report.output_mse;
    const double e_out = ptq::format_gamma(l.W, t, l.cal).report.output_mse;
    CHECK(e_out <= e_imp * (1 + 1e-6));
    // The weight metric without calibration is never worse in weight error than the plain rounding.
    CHECK(ptq::format_gamma(l.W, t).report.weight_mse <= ptq::format_rtn(l.W, t).report.weight_mse);
  }
}

TEST_CASE("format AWQ: shared and tied scales, effective weights, the scaled bytes") {
  const SyntheticLayer& l = layer();
  const MatrixXfR A = l.W.topRows(64), B = l.W.middleRows(64, 32);
  // One scale per input feature shared by two weights; features tied in pairs share a scale.
  std::vector<Index> tie(static_cast<size_t>(kIn));
  for (Index c = 0; c < kIn; ++c) tie[size_t(c)] = c / 2;
  const ptq::AwqScales s = ptq::format_awq_scales({&A, &B}, {Type::Q4_0, Type::Q5_0}, l.cal, {}, tie);
  REQUIRE(s.scale.size() == kIn);
  for (Index c = 0; c < kIn; c += 2) CHECK(s.scale[c] == s.scale[c + 1]);
  CHECK(s.error <= s.error_plain);
  CHECK(std::abs(std::log(double(s.scale.maxCoeff() * s.scale.minCoeff()))) < 1e-5);
  // The bytes hold A·diag(s); the report compares Ŵ·diag(1/s) with A.
  ptq::FormatAwqOptions plain;
  plain.clip_search = false;
  const ptq::FormatResult r = ptq::format_awq(A, Type::Q4_0, l.cal, s.scale, plain);
  const MatrixXfR As = A.array().rowwise() * s.scale.transpose().array();
  CHECK(r.data == formats::quantize_matrix(Type::Q4_0, As));
  const MatrixXfR eff = r.dequantize().array().rowwise() / s.scale.transpose().array();
  CHECK(r.report.output_mse == Approx(ptq::output_error(A, eff, l.cal)));
  // α = 0 only: s = 1 and AWQ is the γ-search.
  ptq::FormatAwqOptions zero;
  zero.grid = 1;
  const ptq::FormatAwqResult z = ptq::format_awq(A, Type::Q4_0, l.cal, zero);
  CHECK(z.alpha == 0.0f);
  CHECK((z.act_divisor.array() == 1.0f).all());
  CHECK(z.quant.data == ptq::format_gamma(A, Type::Q4_0, l.cal).data);
}

TEST_CASE("format algorithms reject bad input with lowbit::Error naming it") {
  const SyntheticLayer& l = layer();
  const MatrixXfR W = l.W.topRows(8);
  const auto throws_with = [](auto&& f, const std::string& what) {
    try {
      f();
      FAIL("expected lowbit::Error mentioning '" << what << "'");
    } catch (const lowbit::Error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(what) != std::string::npos);
    }
  };
  throws_with([&] { ptq::format_rtn(W, Type::F16); }, "F16 is not a block format");
  throws_with([&] { ptq::format_gptq(W, Type::IQ2_XS, l.cal); }, "IQ2_XS is not a block format");
  const MatrixXfR w128 = W.leftCols(128);
  throws_with([&] { ptq::format_gptq(w128, Type::Q4_K, l.cal); }, "rows of 128 weights do not fit Q4_K");
  const MatrixXfR narrow = W.leftCols(48);
  throws_with([&] { ptq::format_gamma(narrow, Type::Q4_0); }, "rows of 48 weights do not fit Q4_0");
  throws_with([&] { ptq::format_gptq(narrow, Type::Q4_0, ptq::detail::calibrate(l.X_cal.leftCols(48), 48)); },
              "rows of 48 weights do not fit Q4_0");
  MatrixXfR bad = W;
  bad(3, 5) = std::numeric_limits<float>::quiet_NaN();
  throws_with([&] { ptq::format_gptq(bad, Type::Q4_0, l.cal); }, "W(3, 5)");
  throws_with([&] { ptq::format_rtn(bad, Type::Q4_0); }, "W(3, 5)");
  const ptq::Calibration small = ptq::detail::calibrate(l.X_cal.leftCols(256), 256);
  throws_with([&] { ptq::format_gptq(W, Type::Q4_0, small); }, "statistics of 512 features");
  throws_with([&] { ptq::format_gamma(W, Type::Q4_0, small); }, "statistics of 512 features");
  ptq::FormatGptqOptions o;
  o.damp = -1;
  throws_with([&] { ptq::format_gptq(W, Type::Q4_0, l.cal, o); }, "options.damp");
  o = {};
  o.clip.steps = 0;
  throws_with([&] { ptq::format_gptq(W, Type::Q4_0, l.cal, o); }, "options.clip.steps");
  o = {};
  o.threads = -1;
  throws_with([&] { ptq::format_gptq(W, Type::Q4_0, l.cal, o); }, "options.threads");
  const ptq::GptqFactor F = ptq::gptq_factor(small);
  std::vector<uint8_t> out(8 * formats::row_bytes(Type::Q4_0, kIn));
  throws_with([&] { ptq::format_gptq_rows(W, Type::Q4_0, F, {}, out.data()); }, "factor of 512");
  ptq::FormatAwqOptions a;
  a.grid = 0;
  throws_with([&] { ptq::format_awq(W, Type::Q4_0, l.cal, a); }, "options.grid");
  throws_with([&] { ptq::format_awq_scales({&W}, {Type::Q4_0}, l.cal, {}, std::vector<Index>(3, 0)); },
              "tie: expected 512");
  throws_with([&] { ptq::format_awq_scales({&W}, {}, l.cal); }, "types: expected one type");
  throws_with([&] { ptq::format_awq(W, Type::Q4_0, l.cal, Eigen::VectorXf::Zero(kIn)); }, "s: expected");
  ptq::FormatGammaOptions g;
  g.clip.gamma_min = 0;
  throws_with([&] { ptq::format_gamma(W, Type::Q4_0, l.cal, g); }, "options.clip.gamma_min");
  // A Hessian that is not positive definite even after more dampening.
  Eigen::MatrixXd indefinite = Eigen::MatrixXd::Identity(kIn, kIn);
  indefinite(0, 1) = indefinite(1, 0) = 2.0;  // eigenvalues 3 and -1 in the first two features
  ptq::FormatGptqOptions nodamp;
  nodamp.damp = 0;
  nodamp.damp_retries = 0;
  throws_with([&] { ptq::format_gptq(W, Type::Q4_0, ptq::Calibration::from_gram(indefinite, 10), nodamp); },
              "not positive definite");
}
