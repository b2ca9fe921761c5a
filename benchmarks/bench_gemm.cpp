// bench_gemm.cpp: lowbit's integer GEMM/GEMV against Eigen fp32 and oneDNN s8s8 (Google Benchmark).
// Names are <op>/<shape>/threads:<t>; counters GOPS (2*M*N*K per second) and, for GEMV, GBps of
// weight bytes streamed (for GGUF's formats, q8_0 ... q6_k: the format's own GGUF bytes).
// Activation quantization is inside the timed op for every int8 path.
// lowbit's rows use the best Isa of the CPU; where AMX is usable, the prefill rows are repeated
// with the Isa forced to amx (<op>_amx) and to avx512_vnni (<op>_vnni) to compare the two.
#include "bench_blocks.hpp"

#include <lowbit/lowbit.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef LOWBIT_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

using namespace lowbit;

namespace {

struct Shape {
  std::string name;
  Index M, N, K;
  bool cold;  // rotate weights through > 64 MiB of copies so they stream from DRAM
};

const std::vector<Shape> shapes = {{"gemv_1x4096x4096", 1, 4096, 4096, false},
                                   {"gemv_cold_1x4096x4096", 1, 4096, 4096, true},
                                   {"prefill_128x4096x4096", 128, 4096, 4096, false},
                                   {"prefill_512x2048x2048", 512, 2048, 2048, false}};

constexpr double cold_bytes = 80.0 * 1024 * 1024;

size_t copies_for(size_t bytes, bool cold) {
  return cold ? size_t(std::ceil(cold_bytes / double(bytes))) + 1 : 1;
}

MatrixXfR random_matrix(Index r, Index c, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  MatrixXfR m(r, c);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = d(rng);
  return m;
}

void set_threads(int t) {
#ifdef _OPENMP
  omp_set_num_threads(t);
#endif
  Eigen::setNbThreads(t);
}

void report(benchmark::State& st, const Shape& s, double weight_bytes) {
  const double ops = 2.0 * double(s.M) * double(s.N) * double(s.K);
  st.counters["GOPS"] = benchmark::Counter(ops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (s.M == 1)
    st.counters["GBps"] = benchmark::Counter(weight_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// One op's data lives while its benchmarks run; the next op's replaces it (bounded memory).
std::shared_ptr<void> cached;
std::string cached_key;

template <class T, class Make>
T& cache(const std::string& key, Make make) {
  if (cached_key != key) {
    cached.reset();
    cached = std::make_shared<T>(make());
    cached_key = key;
  }
  return *static_cast<T*>(cached.get());
}

void bench_eigen(benchmark::State& st, const Shape& s, int threads) {
  struct Data {
    std::vector<MatrixXfR> w;
    MatrixXfR x, y;
  };
  auto& d = cache<Data>("fp32/" + s.name, [&] {
    Data d;
    const MatrixXfR w = random_matrix(s.N, s.K, 1);
    d.w.assign(copies_for(size_t(w.size()) * 4, s.cold), w);
    d.x = random_matrix(s.M, s.K, 2);
    d.y.resize(s.M, s.N);
    return d;
  });
  set_threads(threads);
  size_t i = 0;
  for (auto _ : st) {
    d.y.noalias() = d.x * d.w[i].transpose();
    benchmark::DoNotOptimize(d.y.data());
    i = (i + 1) % d.w.size();
  }
  report(st, s, double(s.N) * double(s.K) * 4.0);
}

void bench_lowbit(benchmark::State& st, const Shape& s, int threads, int bits, int group, ActivationQuant act,
                  std::optional<cpu::Isa> isa = std::nullopt) {
  struct Data {
    std::vector<PackedWeights> w;
    MatrixXfR x, y;
  };
  const std::string key = std::to_string(bits) + "/" + std::to_string(group) + "/" + s.name;
  auto& d = cache<Data>(key, [&] {
    Data d;
    const MatrixXfR wf = random_matrix(s.N, s.K, 1);
    PackedWeights p = bits == 8 ? pack_weights(quantize_weights<8>(wf, Scheme::per_channel(8)))
                                : pack_weights(quantize_weights<4>(wf, Scheme::per_group(4, group)));
    d.w.assign(copies_for(p.weight_bytes(), s.cold), p);
    d.x = random_matrix(s.M, s.K, 2);
    d.y.resize(s.M, s.N);
    return d;
  });
  set_threads(threads);
  LinearOptions opt;
  opt.activations = act;
  std::optional<cpu::ScopedIsa> forced;
  if (isa) forced.emplace(*isa);
  size_t i = 0;
  for (auto _ : st) {
    linear(d.x, d.w[i], d.y, opt);
    benchmark::DoNotOptimize(d.y.data());
    i = (i + 1) % d.w.size();
  }
  report(st, s, double(d.w[0].weight_bytes()));
}

// GGUF's block formats with int8 activations (W x A8, as llama.cpp's CPU backend runs them).
void bench_block(benchmark::State& st, const Shape& s, int threads, const bench::BlockFormat& f) {
  struct Data {
    std::vector<PackedWeights> w;
    MatrixXfR x, y;
  };
  auto& d = cache<Data>(std::string(f.op) + "/" + s.name, [&] {
    Data d;
    PackedWeights p = pack_weights(bench::random_block_weights(f, s.N, s.K, 1));
    d.w.assign(copies_for(p.weight_bytes(), s.cold), p);
    d.x = random_matrix(s.M, s.K, 2);
    d.y.resize(s.M, s.N);
    return d;
  });
  set_threads(threads);
  size_t i = 0;
  for (auto _ : st) {
    linear(d.x, d.w[i], d.y);
    benchmark::DoNotOptimize(d.y.data());
    i = (i + 1) % d.w.size();
  }
  report(st, s, bench::format_bytes(f, s.N, s.K));
}

#ifdef LOWBIT_HAVE_DNNL
// oneDNN matmul, s8 x s8 -> f32, weights reordered once into its preferred layout; the timed op
// quantizes x (per tensor, symmetric: oneDNN 2.6 output scales are per column only) and runs.
void bench_dnnl(benchmark::State& st, const Shape& s, int threads) {
  using namespace dnnl;
  using dt = memory::data_type;
  using tag = memory::format_tag;
  set_threads(threads);
  struct Data {
    engine eng{engine::kind::cpu, 0};
    stream strm{eng};
    matmul::primitive_desc pd;
    matmul prim;
    std::vector<memory> w;
    memory src, dst;
    std::vector<float> wscale, oscale;
    MatrixXfR x;
    std::vector<int8_t> xq;
  };
  auto& d = cache<Data>("dnnl/" + s.name, [&] {
    Data d;
    const MatrixXfR wf = random_matrix(s.N, s.K, 1);
    const auto q = quantize_weights<8>(wf, Scheme::per_channel(8));
    const MatrixXiR codes = q.codes();
    std::vector<int8_t> w8(size_t(s.N * s.K));
    for (Index i = 0; i < codes.size(); ++i) w8[size_t(i)] = int8_t(codes.data()[i]);
    d.wscale = q.params().scale;
    memory::desc src_md({s.M, s.K}, dt::s8, tag::ab), dst_md({s.M, s.N}, dt::f32, tag::ab);
    memory::desc wany({s.K, s.N}, dt::s8, tag::any), wplain({s.K, s.N}, dt::s8, tag::ba);
    primitive_attr attr;
    attr.set_output_scales(1 << 1, {DNNL_RUNTIME_F32_VAL});
    d.pd = matmul::primitive_desc(matmul::desc(src_md, wany, dst_md), attr, d.eng);
    d.prim = matmul(d.pd);
    memory plain(wplain, d.eng, w8.data());
    const size_t n = copies_for(size_t(s.N * s.K), s.cold);
    for (size_t i = 0; i < n; ++i) {
      d.w.emplace_back(d.pd.weights_desc(), d.eng);
      reorder(plain, d.w.back()).execute(d.strm, plain, d.w.back());
    }
    d.strm.wait();
    d.src = memory(src_md, d.eng);
    d.dst = memory(dst_md, d.eng);
    d.x = random_matrix(s.M, s.K, 2);
    d.oscale.resize(size_t(s.N));
    return d;
  });
  memory::desc sc_md({s.N}, dt::f32, tag::a);
  memory scales(sc_md, d.eng, d.oscale.data());
  size_t i = 0;
  for (auto _ : st) {
    const float amax = d.x.cwiseAbs().maxCoeff();
    const float sa = std::max(amax / 127.0f, 1e-12f), inv = 1.0f / sa;
    auto* xq = static_cast<int8_t*>(d.src.get_data_handle());
    const float* x = d.x.data();
    for (Index k = 0; k < d.x.size(); ++k) xq[k] = int8_t(std::nearbyint(x[k] * inv));
    for (size_t n = 0; n < d.oscale.size(); ++n) d.oscale[n] = sa * d.wscale[n];
    d.prim.execute(d.strm, {{DNNL_ARG_SRC, d.src}, {DNNL_ARG_WEIGHTS, d.w[i]}, {DNNL_ARG_DST, d.dst},
                            {DNNL_ARG_ATTR_OUTPUT_SCALES, scales}});
    d.strm.wait();
    i = (i + 1) % d.w.size();
  }
  report(st, s, double(s.N * s.K) + 4.0 * double(s.N));
}
#endif

void register_all() {
  const bool amx = cpu::is_supported(cpu::Isa::amx);
  if (!amx)
    std::fprintf(stderr, "bench_gemm: skipping the *_amx and *_vnni rows: AMX-INT8 is not usable on this CPU or OS\n");
  for (const Shape& s : shapes)
    for (int t : {1, 2}) {
      const std::string suffix = "/" + s.name + "/threads:" + std::to_string(t);
      auto reg = [&](const std::string& op, auto fn) {
        benchmark::RegisterBenchmark((op + suffix).c_str(), fn)->UseRealTime()->Unit(benchmark::kMillisecond);
      };
      reg("fp32_eigen", [s, t](benchmark::State& st) { bench_eigen(st, s, t); });
      reg("w8a8", [s, t](benchmark::State& st) { bench_lowbit(st, s, t, 8, 0, ActivationQuant::int8); });
      reg("w4a8_g16", [s, t](benchmark::State& st) { bench_lowbit(st, s, t, 4, 16, ActivationQuant::int8); });
      reg("w4a8_g32", [s, t](benchmark::State& st) { bench_lowbit(st, s, t, 4, 32, ActivationQuant::int8); });
      reg("w4a8_g128", [s, t](benchmark::State& st) { bench_lowbit(st, s, t, 4, 128, ActivationQuant::int8); });
      reg("w8a32", [s, t](benchmark::State& st) { bench_lowbit(st, s, t, 8, 0, ActivationQuant::float32); });
      reg("w4a32_g32", [s, t](benchmark::State& st) { bench_lowbit(st, s, t, 4, 32, ActivationQuant::float32); });
      if (amx && s.M >= 16)  // the tiles run prefill only; GEMV is avx512_vnni either way
        for (cpu::Isa isa : {cpu::Isa::amx, cpu::Isa::avx512_vnni}) {
          const std::string tag = isa == cpu::Isa::amx ? "_amx" : "_vnni";
          reg("w8a8" + tag, [s, t, isa](benchmark::State& st) { bench_lowbit(st, s, t, 8, 0, ActivationQuant::int8, isa); });
          reg("w4a8_g32" + tag,
              [s, t, isa](benchmark::State& st) { bench_lowbit(st, s, t, 4, 32, ActivationQuant::int8, isa); });
          reg("w4a8_g128" + tag,
              [s, t, isa](benchmark::State& st) { bench_lowbit(st, s, t, 4, 128, ActivationQuant::int8, isa); });
        }
      for (const bench::BlockFormat& f : bench::block_formats())
        reg(f.op, [s, t, &f](benchmark::State& st) { bench_block(st, s, t, f); });
#ifdef LOWBIT_HAVE_DNNL
      reg("onednn_s8s8", [s, t](benchmark::State& st) { bench_dnnl(st, s, t); });
#endif
    }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
