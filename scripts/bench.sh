#!/usr/bin/env bash
# bench.sh: installs what the benchmarks need (Google Benchmark, oneDNN), builds bench_gemm and
# bench_decoder in Release, runs them with repetitions and prints the median table with ratios
# against fp32 (Eigen) from the same run. JSON results land in build/bench/*.json.
# Environment: REPS (repetitions, default 5), GEMM_FILTER / DECODER_FILTER (benchmark regexes),
# SKIP_DECODER=1 to skip the decoder-layer benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh libdnnl-dev python3

out=build/bench
cmake -S . -B "$out" -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_TESTS=OFF -DLOWBIT_BUILD_EXAMPLES=OFF \
  -DLOWBIT_BUILD_BENCHMARKS=ON >/dev/null
cmake --build "$out" -j "$(nproc)" --target bench_gemm bench_decoder

reps=${REPS:-5}
LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
export LOAD_BEFORE
common=(--benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true --benchmark_format=json)
echo "== bench_gemm (median of $reps)" >&2
"$out/benchmarks/bench_gemm" "${common[@]}" --benchmark_filter="${GEMM_FILTER:-.}" >"$out/gemm.json"
if [ "${SKIP_DECODER:-0}" != 1 ]; then
  echo "== bench_decoder (median of $reps)" >&2
  "$out/benchmarks/bench_decoder" "${common[@]}" --benchmark_min_time=0.5 \
    --benchmark_filter="${DECODER_FILTER:-.}" >"$out/decoder.json"
fi

python3 - "$out/gemm.json" "$out/decoder.json" <<'PY'
import json, os, sys

def medians(path):
    if not os.path.exists(path):
        return {}
    rows = {}
    for b in json.load(open(path))["benchmarks"]:
        if b.get("aggregate_name") == "median":
            rows[b["run_name"].replace("/real_time", "")] = b
    return rows

gemm = medians(sys.argv[1])
ctx = json.load(open(sys.argv[1]))["context"]
print(f"machine: {ctx.get('num_cpus')} CPUs at {ctx.get('mhz_per_cpu')} MHz; caches: " +
      ", ".join(f"L{c['level']} {c['type']} {c['size'] // 1024} KiB" for c in ctx.get("caches", [])))
# The ISA extensions lowbit's dispatch can use, as the kernel reports them, and the load the
# figures were measured under (another job on a core skews any single figure).
flags = set()
if os.path.exists("/proc/cpuinfo"):
    for line in open("/proc/cpuinfo"):
        if line.startswith(("flags", "Features")):
            flags |= set(line.split(":", 1)[1].split())
isa = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "amx_tile", "amx_int8",
       "asimd", "asimddp"]
print("ISA: " + (" ".join(f for f in isa if f in flags) or "none of " + " ".join(isa)))
print(f"load average: {os.environ.get('LOAD_BEFORE', '?')} before, {open('/proc/loadavg').read().split()[0]} after "
      f"(1-minute averages)")
print()
def scaling(rows, name, key, faster):
    # This row against the same benchmark on 1 thread (threads must never make a kernel slower).
    head, threads = name.rsplit("/", 1)
    one = rows.get(f"{head}/threads:1")
    if threads == "threads:1" or not one:
        return f"{'':>11}"
    this = rows[name]
    return f"{(this[key] / one[key] if faster else one[key] / this[key]):11.2f}"

print(f"{'benchmark':48} {'ms':>9} {'GOPS':>8} {'GB/s':>7} {'x fp32_eigen':>13} {'x 1 thread':>11}")
for name, b in gemm.items():
    op, shape, threads = name.split("/")
    base = gemm.get(f"fp32_eigen/{shape}/{threads}")
    ratio = base["real_time"] / b["real_time"] if base else float("nan")
    gbps = f"{b['GBps']:7.1f}" if "GBps" in b else f"{'':7}"
    print(f"{name:48} {b['real_time']:9.3f} {b['GOPS']:8.1f} {gbps} {ratio:13.2f} "
          f"{scaling(gemm, name, 'real_time', False)}")

dec = medians(sys.argv[2])
if dec:
    print()
    print(f"{'decoder layer':44} {'tokens/s':>10} {'x fp32':>7} {'TSC cycles/token':>17} {'J/token':>8} "
          f"{'x 1 thread':>11}")
    for name, b in dec.items():
        _, kind, phase, threads = name.split("/")
        base = dec.get(f"decoder/fp32/{phase}/{threads}")
        ratio = b["tokens_per_s"] / base["tokens_per_s"] if base else float("nan")
        joules = f"{b['joules_per_token']:8.3f}" if "joules_per_token" in b else "     n/a"
        print(f"{name:44} {b['tokens_per_s']:10.1f} {ratio:7.2f} {b['tsc_cycles_per_token']:17.3g} {joules} "
              f"{scaling(dec, name, 'tokens_per_s', True)}")
    if not any("joules_per_token" in b for b in dec.values()):
        print("energy: this machine exposes no RAPL counters (/sys/class/powercap), so no joules per token")
PY
