// mixed_precision.cpp: allocates bits over a synthetic LLM-like stack with the closed-form and
// the measured allocators, and compares them with uniform 4- and 8-bit at the same size.
#include <lowbit/mixed/closed_form.hpp>
#include <lowbit/mixed/measured.hpp>
#include <lowbit/mixed/synthetic.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <string>
#include <vector>

using namespace lowbit;
using namespace lowbit::mixed;

namespace {

nlohmann::json to_json(const Allocation& a) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : a.layers)
    layers.push_back({{"name", l.name}, {"rows", l.rows}, {"cols", l.cols}, {"bits", l.candidate.bits},
                      {"group_size", l.candidate.group_size}, {"method", to_string(l.candidate.method)},
                      {"bytes", l.bytes}, {"measured", l.measured}});
  return {{"allocator", a.allocator}, {"bytes", a.total_bytes}, {"budget_bytes", a.budget_bytes},
          {"bits_per_weight", a.bits_per_weight()}, {"distortion", a.measured_total},
          {"layers", layers}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Mixed-precision bit allocation on a synthetic LLM-like stack"};
  SyntheticStackOptions stack;
  int baseline_group = 128;
  std::vector<int> widths{2, 3, 4, 8};
  std::vector<int> groups{32, 64, 128};
  std::vector<std::string> methods{"rtn"};
  std::vector<int> sizes{4, 8};
  bool asymmetric = false, verbose = false;
  std::string json_path;
  app.add_option("--blocks", stack.blocks, "transformer blocks (7 layers each)")->check(CLI::PositiveNumber);
  app.add_option("--hidden", stack.hidden, "hidden size")->check(CLI::PositiveNumber);
  app.add_option("--ffn", stack.ffn, "MLP size")->check(CLI::PositiveNumber);
  app.add_option("--tokens", stack.tokens, "calibration tokens")->check(CLI::PositiveNumber);
  app.add_option("--seed", stack.seed, "random seed");
  app.add_option("--widths", widths, "supported widths (16/32 = float)");
  app.add_option("--groups", groups, "group sizes the measured allocator may pick (0 = per row)");
  app.add_option("--methods", methods, "rounding methods the measured allocator may pick: rtn, gamma, gptq")
      ->check(CLI::IsMember({"rtn", "gamma", "gptq"}));
  app.add_option("--sizes", sizes, "uniform widths whose size is the budget (2..8)")->check(CLI::Range(2, 8));
  app.add_option("--baseline-group", baseline_group, "group size of the uniform baselines and the closed form");
  app.add_flag("--asymmetric", asymmetric, "asymmetric (zero point) quantization");
  app.add_flag("--verbose", verbose, "print every allocation table");
  app.add_option("--json", json_path, "write the results as JSON to this file");
  CLI11_PARSE(app, argc, argv);

  try {
    stack.sigma_group = baseline_group;
    const std::vector<Layer> layers = synthetic_llm_stack(stack);
    const bool sym = !asymmetric;
    const auto method_of = [](const std::string& m) {
      return m == "gptq" ? Method::gptq : m == "gamma" ? Method::gamma_search : Method::rtn;
    };
    std::vector<Candidate> candidates;  // every method's grid; a float width only once
    for (size_t k = 0; k < methods.size(); ++k)
      for (const auto& c : candidate_grid(widths, groups, method_of(methods[k]), sym))
        if (k == 0 || !c.keeps_float()) candidates.push_back(c);
    const CostTable table = measure_costs(layers, candidates);
    ClosedFormOptions cf;
    cf.widths = widths;
    cf.group_size = baseline_group;
    cf.symmetric = sym;

    fmt::print("{} layers, {} weights; distortion = sum over layers of ||X (W - W_hat)^T||^2 on {} calibration tokens\n\n",
               layers.size(), [&] { Index n = 0; for (const auto& l : layers) n += l.weights(); return n; }(),
               stack.tokens);
    nlohmann::json out = nlohmann::json::array();
    fmt::print("{:<30} {:>9} {:>8} {:>12} {:>10}\n", "allocation", "bytes", "bits/w", "distortion",
               "vs first");
    const auto print = [&](const std::string& name, const Allocation& a, double reference) {
      fmt::print("{:<30} {:>9} {:>8.3f} {:>12.4e} {:>9.3f}x\n", name, a.total_bytes,
                 a.bits_per_weight(), a.measured_total, a.measured_total / reference);
      out.push_back(to_json(a));
    };
    for (int base_bits : sizes) {
      // The reference: uniform base_bits g<baseline_group> with the first method.
      Allocation reference = uniform_allocation(layers, {base_bits, baseline_group, sym, method_of(methods[0])});
      measure_allocation(layers, reference);
      const Budget budget = Budget::bytes(reference.total_bytes);
      for (const auto& m : methods) {
        Allocation uniform = uniform_allocation(layers, {base_bits, baseline_group, sym, method_of(m)});
        measure_allocation(layers, uniform);
        print(uniform.allocator, uniform, reference.measured_total);
      }
      for (const auto& m : methods) {
        cf.method = method_of(m);
        Allocation closed = allocate_closed_form(layers, budget, cf);
        measure_allocation(layers, closed);
        print(fmt::format("closed-form {} @ {}-bit size", m, base_bits), closed, reference.measured_total);
        if (verbose) fmt::print("\n{}\n", format_report(closed));
      }
      const Allocation measured = allocate_measured(layers, table, budget);
      print(fmt::format("measured @ {}-bit size", base_bits), measured, reference.measured_total);
      MeasuredOptions lagrangian_only;
      lagrangian_only.exact_cells_limit = 0;
      const Allocation lag = allocate_measured(layers, table, budget, lagrangian_only);
      print(fmt::format("  Lagrangian+greedy only"), lag, reference.measured_total);
      fmt::print("  {:<28} {:>31.4e} {:>9.3f}x\n", "(its dual lower bound)", lag.lower_bound,
                 lag.lower_bound / reference.measured_total);
      if (verbose || base_bits == 4) fmt::print("\n{}\n", format_report(measured));
    }
    if (!json_path.empty()) {
      std::ofstream(json_path) << out.dump(2) << "\n";
      fmt::print("wrote {}\n", json_path);
    }
  } catch (const Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
