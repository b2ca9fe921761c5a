// bench_decoder.cpp: one Llama-2-7B decoder layer's matrix work (q, k, v, o projections and the
// SwiGLU FFN; hidden 4096, FFN 11008) in FP32 (Eigen), W8A8, W4A8 (group 32) and the GGUF block
// formats llama.cpp files hold most (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K): tokens/s for decode (M = 1) and
// prefill (M = 128), CPU cycles per token and, where RAPL is exposed, joules per token.
// Attention itself (softmax over the KV cache) is the same in every variant and left out.
#include "bench_blocks.hpp"

#include <lowbit/lowbit.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <x86intrin.h>

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace lowbit;

namespace {

constexpr Index hidden = 4096, ffn = 11008;

MatrixXfR random_matrix(Index r, Index c, unsigned seed, float sd) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  MatrixXfR m(r, c);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = d(rng);
  return m;
}

// [out, in] shapes of the seven projections.
const Index shapes[7][2] = {{hidden, hidden}, {hidden, hidden}, {hidden, hidden}, {hidden, hidden},
                            {ffn, hidden},    {ffn, hidden},    {hidden, ffn}};

struct Layer {
  std::vector<MatrixXfR> fp32;
  std::vector<PackedWeights> packed;
};

/// The GGUF block format benchmarked as `kind` ("q4_k", ...), or nullptr for lowbit's own.
const bench::BlockFormat* block_format(const std::string& kind) {
  for (const auto& f : bench::block_formats())
    if (kind == f.op) return &f;
  return nullptr;
}

Layer make_layer(const std::string& kind) {
  Layer l;
  for (unsigned i = 0; i < 7; ++i) {
    const MatrixXfR w = random_matrix(shapes[i][0], shapes[i][1], 10 + i, 0.02f);
    if (kind == "fp32")
      l.fp32.push_back(w);
    else if (const bench::BlockFormat* f = block_format(kind))
      l.packed.push_back(pack_weights(bench::random_block_weights(*f, shapes[i][0], shapes[i][1], 10 + i)));
    else if (kind == "w8a8")
      l.packed.push_back(pack_weights(quantize_weights<8>(w, Scheme::per_channel(8))));
    else
      l.packed.push_back(pack_weights(quantize_weights<4>(w, Scheme::per_group(4, 32))));
  }
  return l;
}

// q, k, v = x Wq^T, x Wk^T, x Wv^T; o = v Wo^T (stands in for attention's output);
// h = silu(x Wg^T) * (x Wu^T); out = h Wd^T.
struct Buffers {
  MatrixXfR q, k, v, o, g, u, d;
};

void forward(const Layer& l, const MatrixXfR& x, Buffers& b) {
  if (!l.fp32.empty()) {
    b.q.noalias() = x * l.fp32[0].transpose();
    b.k.noalias() = x * l.fp32[1].transpose();
    b.v.noalias() = x * l.fp32[2].transpose();
    b.o.noalias() = b.v * l.fp32[3].transpose();
    b.g.noalias() = x * l.fp32[4].transpose();
    b.u.noalias() = x * l.fp32[5].transpose();
    b.g = (b.g.array() / (1.0f + (-b.g.array()).exp()) * b.u.array()).matrix();
    b.d.noalias() = b.g * l.fp32[6].transpose();
  } else {
    linear(x, l.packed[0], b.q);
    linear(x, l.packed[1], b.k);
    linear(x, l.packed[2], b.v);
    linear(b.v, l.packed[3], b.o);
    LinearOptions silu;
    silu.epilogue.activation = Activation::silu;
    linear(x, l.packed[4], b.g, silu);
    linear(x, l.packed[5], b.u);
    b.g.array() *= b.u.array();
    linear(b.g, l.packed[6], b.d);
  }
}

/// User-space CPU cycles of this thread, when the kernel lets us count them (not in every VM).
class CycleCounter {
 public:
  CycleCounter() {
    perf_event_attr a{};
    a.type = PERF_TYPE_HARDWARE;
    a.size = sizeof(a);
    a.config = PERF_COUNT_HW_CPU_CYCLES;
    a.exclude_kernel = 1;
    a.exclude_hv = 1;
    a.inherit = 1;
    fd_ = int(syscall(SYS_perf_event_open, &a, 0, -1, -1, 0));
  }
  ~CycleCounter() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  long long read_count() const {
    long long v = 0;
    if (fd_ < 0 || ::read(fd_, &v, sizeof(v)) != sizeof(v)) return -1;
    return v;
  }

 private:
  int fd_ = -1;
};

/// Package energy in microjoules from RAPL (powercap), or -1 when the machine does not expose it.
long long rapl_uj() {
  std::ifstream f("/sys/class/powercap/intel-rapl:0/energy_uj");
  long long v = -1;
  if (f) f >> v;
  return v;
}

std::shared_ptr<Layer> cached;
std::string cached_kind;

void run_layer(benchmark::State& st, const std::string& kind, Index M, int threads) {
  if (cached_kind != kind) {
    cached.reset();
    cached = std::make_shared<Layer>(make_layer(kind));
    cached_kind = kind;
  }
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
  Eigen::setNbThreads(threads);
  const MatrixXfR x = random_matrix(M, hidden, 3, 1.0f);
  Buffers b;
  b.q.resize(M, hidden);
  b.k.resize(M, hidden);
  b.v.resize(M, hidden);
  b.o.resize(M, hidden);
  b.g.resize(M, ffn);
  b.u.resize(M, ffn);
  b.d.resize(M, hidden);
  CycleCounter cycles;
  const long long c0 = cycles.read_count(), e0 = rapl_uj();
  const unsigned long long t0 = __rdtsc();
  for (auto _ : st) {
    forward(*cached, x, b);
    benchmark::DoNotOptimize(b.d.data());
  }
  const double tokens = double(st.iterations()) * double(M);
  st.counters["tokens_per_s"] = benchmark::Counter(double(M), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["tsc_cycles_per_token"] = double(__rdtsc() - t0) / tokens;
  if (cycles.ok()) st.counters["cpu_cycles_per_token"] = double(cycles.read_count() - c0) / tokens;
  if (e0 >= 0) st.counters["joules_per_token"] = double(rapl_uj() - e0) * 1e-6 / tokens;
}

}  // namespace

int main(int argc, char** argv) {
  for (const std::string kind : {"fp32", "w8a8", "w4a8_g32", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k"})
    for (Index M : {Index(1), Index(128)})
      for (int t : {1, 2}) {
        const std::string name = "decoder/" + kind + "/" + (M == 1 ? "decode_1" : "prefill_128") +
                                 "/threads:" + std::to_string(t);
        benchmark::RegisterBenchmark(name.c_str(), [kind, M, t](benchmark::State& st) { run_layer(st, kind, M, t); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  CycleCounter probe;
  std::fprintf(stderr, "bench_decoder: CPU cycle counter %s; RAPL energy counters %s\n",
               probe.ok() ? "available (perf_event, user space)" : "not available here (reporting TSC cycles only)",
               rapl_uj() >= 0 ? "available" : "not exposed on this machine (no /sys/class/powercap): no energy figures");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
