// bench_ptq.cpp: time of each weight-PTQ method on one LLM-sized layer (default 4096x4096 with
// 2048 calibration tokens, INT4 g128), single thread. LOWBIT_BENCH_PTQ_DIM / _TOKENS override the
// sizes for a quick run. Each method runs once; output-error ratios vs RTN are counters.
#include <lowbit/ptq/awq.hpp>
#include <lowbit/ptq/gamma_search.hpp>
#include <lowbit/ptq/gptq.hpp>
#include <lowbit/ptq/rtn.hpp>
#include <lowbit/ptq/smoothquant.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <random>

namespace {

using lowbit::Index;
using lowbit::MatrixXfR;

Index env_size(const char* name, Index fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && std::atol(v) > 0 ? Index(std::atol(v)) : fallback;
}

// Heavy-tailed weights and correlated activations (low rank + noise, a few outlier channels).
struct Layer {
  Index dim = env_size("LOWBIT_BENCH_PTQ_DIM", 4096);
  Index tokens = env_size("LOWBIT_BENCH_PTQ_TOKENS", 2048);
  MatrixXfR W, X;
  lowbit::Scheme scheme = lowbit::Scheme::per_group(4, 128, false);
  double rtn_error = 0.0;

  Layer() : W(dim, dim), X(tokens, dim) {
    std::mt19937 rng(1);
    std::student_t_distribution<float> t(4.0f);
    std::normal_distribution<float> n01(0.0f, 1.0f);
    for (Index i = 0; i < W.size(); ++i) W.data()[i] = 0.02f * t(rng);
    const Index rank = 64;
    MatrixXfR z(tokens, rank), mixing(rank, dim);
    for (Index i = 0; i < z.size(); ++i) z.data()[i] = n01(rng);
    for (Index i = 0; i < mixing.size(); ++i) mixing.data()[i] = n01(rng) / std::sqrt(float(rank));
    X = z * mixing;
    for (Index i = 0; i < X.size(); ++i) X.data()[i] += 0.5f * n01(rng);
    for (Index j = 0; j < dim; ++j) X.col(j) *= std::exp(0.5f * n01(rng)) * (j % 512 == 7 ? 20.0f : 1.0f);
  }

  const lowbit::ptq::Calibration& calib() {
    static const lowbit::ptq::Calibration c = lowbit::ptq::detail::calibrate(X, dim);
    return c;
  }
};

Layer& layer() {
  static Layer l;
  return l;
}

void report(benchmark::State& state, double output_mse) {
  Layer& l = layer();
  if (l.rtn_error == 0.0) l.rtn_error = lowbit::ptq::rtn(l.W, l.scheme, l.calib()).report.output_mse;
  state.counters["err_vs_rtn"] = output_mse / l.rtn_error;
  state.SetLabel(std::to_string(l.dim) + "x" + std::to_string(l.dim) + ", " +
                 std::to_string(l.tokens) + " tokens, INT4 g128");
}

void BM_calibrate(benchmark::State& state) {
  Layer& l = layer();
  for (auto _ : state) {
    lowbit::ptq::Calibration c(l.dim);
    c.add(l.X);
    benchmark::DoNotOptimize(c.gram().data());
  }
}

void BM_rtn(benchmark::State& state) {
  Layer& l = layer();
  double e = 0;
  for (auto _ : state) e = lowbit::ptq::rtn(l.W, l.scheme, l.calib()).report.output_mse;
  report(state, e);
}

void BM_search_gamma(benchmark::State& state) {
  Layer& l = layer();
  double e = 0;
  for (auto _ : state) e = lowbit::ptq::search_gamma(l.W, l.scheme, l.calib()).report.output_mse;
  report(state, e);
}

// GPTQ from the raw tokens: Hessian accumulation + factorisation + quantization.
void BM_gptq(benchmark::State& state) {
  Layer& l = layer();
  double e = 0;
  lowbit::ptq::GptqOptions o;
  o.clip_search = state.range(0) != 0;
  for (auto _ : state) e = lowbit::ptq::gptq(l.W, l.scheme, l.X, o).report.output_mse;
  report(state, e);
}

void BM_awq(benchmark::State& state) {
  Layer& l = layer();
  double e = 0;
  for (auto _ : state) e = lowbit::ptq::awq(l.W, l.scheme, l.calib()).quant.report.output_mse;
  report(state, e);
}

void BM_smoothquant(benchmark::State& state) {
  Layer& l = layer();
  for (auto _ : state) benchmark::DoNotOptimize(lowbit::ptq::smoothquant(l.W, l.calib()).weight.data());
}

}  // namespace

BENCHMARK(BM_calibrate)->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(BM_rtn)->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(BM_search_gamma)->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(BM_gptq)->ArgName("clip")->Arg(0)->Arg(1)->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(BM_awq)->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(BM_smoothquant)->Iterations(1)->Unit(benchmark::kSecond);

int main(int argc, char** argv) {
  Eigen::setNbThreads(1);
  benchmark::Initialize(&argc, argv);
  layer().calib();  // built once, outside the timed loops (BM_calibrate times it)
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
