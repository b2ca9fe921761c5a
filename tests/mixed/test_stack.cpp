// test_stack.cpp: on a synthetic LLM-like stack with differing sensitivities, both allocators
// beat uniform INT4 g128 at the same bytes, and the measured one is never worse than the closed
// form; measured and closed-form allocations measured independently of the cost table.
#include <lowbit/mixed/closed_form.hpp>
#include <lowbit/mixed/measured.hpp>
#include <lowbit/mixed/synthetic.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

using namespace lowbit;
using namespace lowbit::mixed;

TEST_CASE("synthetic stack: mixed precision beats uniform INT4 g128 at equal bytes") {
  for (uint32_t seed : {1u, 2u}) {
    SyntheticStackOptions o;
    o.seed = seed;
    o.tokens = 128;
    const std::vector<Layer> layers = synthetic_llm_stack(o);
    REQUIRE(layers.size() == 14);
    // Sensitivities really differ (attention output vs deeper hidden states).
    double amin = 1e300, amax = 0.0;
    for (const auto& l : layers) amin = std::min(amin, l.alpha * l.sigma2), amax = std::max(amax, l.alpha * l.sigma2);
    CHECK(amax / amin > 10.0);

    Allocation uniform = uniform_allocation(layers, {4, 128, true, Method::rtn});
    measure_allocation(layers, uniform);
    const Budget budget = Budget::bytes(uniform.total_bytes);

    Allocation closed = allocate_closed_form(layers, budget);
    measure_allocation(layers, closed);
    const CostTable table = measure_costs(layers, candidate_grid({2, 3, 4, 8}, {32, 64, 128}));
    const Allocation measured = allocate_measured(layers, table, budget);

    CHECK(closed.total_bytes <= uniform.total_bytes);
    CHECK(measured.total_bytes <= uniform.total_bytes);
    CHECK(measured.exact);
    CHECK(closed.measured_total < uniform.measured_total);
    CHECK(measured.measured_total < uniform.measured_total);
    CHECK(measured.measured_total <= closed.measured_total);
    // The table's distortions are the allocation's real output errors.
    Allocation remeasured = measured;
    measure_allocation(layers, remeasured);
    CHECK(remeasured.measured_total == Approx(measured.measured_total).epsilon(1e-12));
    // Pinning the first layer to 8 bits is honoured and costs distortion, never budget.
    auto pinned_layers = layers;
    pinned_layers[0].min_bits = 8;
    const Allocation pinned = allocate_measured(pinned_layers, measure_costs(pinned_layers, candidate_grid({2, 3, 4, 8}, {32, 64, 128})), budget);
    CHECK(pinned.layers[0].candidate.bits == 8);
    CHECK(pinned.total_bytes <= uniform.total_bytes);
    CHECK(pinned.measured_total >= measured.measured_total);
  }
}
