// llama_study.cpp: the study on a real llama GGUF in one run: FP32, best PTQ and QAT at INT8/4/3/2
// g32, mixed precision (PTQ and QAT) at 3-6 bits/weight and at the sizes of uniform INT3/INT4
// g32; table, headline figures, JSON, CSV and a gnuplot plot.
#include "../llama/rotate.hpp"
#include "study.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace {

using study::Row;

bool tty() { return isatty(fileno(stderr)) != 0; }

// Progress on stderr, only when it is a terminal.
void progress(const std::string& what) {
  if (tty()) fmt::print(stderr, "\r\033[K{}", what);
}
void progress_done() {
  if (tty()) fmt::print(stderr, "\r\033[K");
}

std::string budget_label(double b) { return fmt::format("{:g}", b); }

struct Options {
  std::string model = "../shared/models/stories260K.gguf";
  std::string text = "../shared/data/tinystories_val.txt";
  std::string json, csv = "llama_study.csv", plot = "llama_study.png";
  int context = 512;
  long min_predictions = 20000;
  long calib_tokens = 20000;
  int group = 32;
  std::vector<int> bits{8, 4, 3, 2};
  std::vector<int> qat_bits{8, 4, 3, 2};
  std::vector<std::string> methods{"rtn", "gamma", "gptq"};
  std::vector<double> budgets{3, 3.5, 4, 4.5, 5, 6};
  std::vector<int> mixed_groups{32, 64, 128};
  int qat_steps = 100;
  long qat_batch = 2048;
  float qat_lr = 5e-4f;
  double kd = 1.0, ce = 0.0;
  bool quick = false;
  uint32_t seed = 1234;
  // Rotation (issue 15): off unless --rotate names a kind.
  std::string rotate;            ///< "", "auto", "hadamard", "random"
  bool rotate_heads = false;     ///< also rotate each head's value/output pair
  int rotate_seeds = 1;          ///< seeds rotate_seed .. rotate_seed + rotate_seeds - 1 are tried
  uint64_t rotate_seed = 0;
  long val_predictions = 10000;  ///< held-out tail of the calibration half that chooses
  std::vector<int> act_bits{8, 4};  ///< W<b>A8 settings (INT8 activations) run with --rotate
  bool rotation_only = false;    ///< skip mixed precision and QAT
};

std::string num_or_dash(double v, const char* fmt_spec = "{:.4f}") {
  return std::isnan(v) ? std::string("-") : fmt::format(fmt::runtime(fmt_spec), v);
}

void write_csv(const std::string& path, const std::vector<Row>& rows) {
  std::ofstream f(path);
  lowbit::detail::require(bool(f), "--csv: cannot write '{}'", path);
  f << "kind,method,weight_bits,group_size,bits_per_weight,bytes,size_reduction_pct,predictions,"
       "ppl,delta_ppl_pct,tokens_per_s,best,transform,activations,val_ppl,chosen\n";
  for (const auto& r : rows)
    f << fmt::format("{},{},{},{},{:.4f},{},{:.3f},{},{:.5f},{:.3f},{:.0f},{},{},{},{},{}\n", r.kind,
                     r.method, r.weight_bits, r.group_size, r.bits_per_weight, r.bytes,
                     r.size_reduction_pct, r.predictions, r.ppl, r.delta_ppl_pct, r.tokens_per_s,
                     r.best ? 1 : 0, r.transform, r.activations,
                     std::isnan(r.val_ppl) ? std::string() : fmt::format("{:.5f}", r.val_ppl),
                     r.chosen ? 1 : 0);
}

// PNG of PPL against size reduction per kind, with the FP32, +3% and +6% lines, drawn by gnuplot
// (an external program) from the CSV. Returns false when gnuplot is absent or fails.
bool write_plot(const std::string& png, const std::string& csv, const std::vector<Row>& rows) {
  double lo = 100, hi = 0;  // x range of the quantized rows
  for (const auto& r : rows)
    if (r.kind != "fp32") {
      lo = std::min(lo, r.size_reduction_pct);
      hi = std::max(hi, r.size_reduction_pct);
    }
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) return false;
  const std::string script = png + ".gp";
  {
    std::ofstream g(script);
    g << "set terminal pngcairo size 1000,640 noenhanced\n"
      << "set output '" << png << "'\n"
      << "set datafile separator ','\n"
      << "set title 'stories260K: perplexity vs size reduction (lowbit PTQ, QAT, mixed precision)'\n"
      << "set xlabel 'size reduction vs FP32 (%)'\nset ylabel 'perplexity (log scale)'\n"
      << "set logscale y\nset grid\nset key top left\n"
      << fmt::format("set xrange [{:.1f}:{:.1f}]\n", std::max(0.0, lo - 2), std::min(100.0, hi + 2))
      << fmt::format("fp = {:.6f}\n", rows.front().ppl)
      << "sel(k) = (strcol(1) eq k && strcol(12) eq '1') ? $9 : 1/0\n"
      << "plot fp w l dt 2 lc rgb 'black' t 'FP32', fp*1.03 w l dt 3 lc rgb 'gray40' t 'FP32 +3%', "
         "fp*1.06 w l dt 4 lc rgb 'gray60' t 'FP32 +6%', "
      << "'" << csv << "' skip 1 u 7:(sel('ptq')) w p pt 7 ps 1.5 t 'PTQ (best of methods)', "
      << "'" << csv << "' skip 1 u 7:(sel('qat')) w p pt 5 ps 1.5 t 'QAT', "
      << "'" << csv << "' skip 1 u 7:(sel('mixed_ptq')) w p pt 9 ps 1.5 t 'mixed PTQ', "
      << "'" << csv << "' skip 1 u 7:(sel('mixed_qat')) w p pt 11 ps 1.5 t 'mixed QAT'";
    if (std::any_of(rows.begin(), rows.end(), [](const Row& r) { return r.kind == "rotation" && r.best; }))
      g << ", '" << csv << "' skip 1 u 7:(sel('rotation')) w p pt 13 ps 1.5 t 'PTQ + fold/rotation (chosen on validation)'";
    g << "\n";
  }
  const bool ok = std::system(("gnuplot '" + script + "' 2>/dev/null").c_str()) == 0;
  std::remove(script.c_str());
  return ok;
}

nlohmann::json to_json(const Row& r) {
  return {{"kind", r.kind},
          {"method", r.method},
          {"weight_bits", r.weight_bits},
          {"group_size", r.group_size},
          {"bits_per_weight", r.bits_per_weight},
          {"bytes", r.bytes},
          {"size_reduction_pct", r.size_reduction_pct},
          {"predictions", r.predictions},
          {"mean_nll", r.mean_nll},
          {"ppl", r.ppl},
          {"delta_ppl_pct", r.delta_ppl_pct},
          {"tokens_per_s", r.tokens_per_s},
          {"best", r.best},
          {"transform", r.transform},
          {"activations", r.activations},
          {"val_ppl", std::isnan(r.val_ppl) ? nlohmann::json(nullptr) : nlohmann::json(r.val_ppl)},
          {"chosen", r.chosen}};
}

/// One --rotate setting (width, activations, method): its rows, one per candidate (plain, fold,
/// fold + rotation per seed), the candidate the validation perplexity chose, and the rotated
/// candidate with the lowest validation perplexity (the seed choice).
struct RotationSetting {
  std::string name;
  bool a8 = false;
  std::vector<size_t> rows;
  size_t chosen = 0;
  size_t best_rotation = 0;
};

/// The rotation table, the goals of issue 15 and where rotation hurt.
void print_rotation(const Options& o, const study::ValidationSplit& vs, const std::vector<Row>& rows,
                    const std::vector<RotationSetting>& settings) {
  fmt::print("\nrotation: --rotate {}{}, seeds {}..{}; chosen per setting by the perplexity on the held-out "
             "tail of the calibration half ({} chunks, {} predictions), never on the evaluation half; "
             "calibration from the {} chunks before it\n\n",
             o.rotate, o.rotate_heads ? " --rotate-heads" : "", o.rotate_seed,
             o.rotate_seed + uint64_t(o.rotate_seeds) - 1, vs.validation.size(), vs.validation_predictions,
             vs.fit.size());
  fmt::print("{:<18} {:<38} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}  {}\n", "setting", "transform", "bits/w",
             "bytes", "val PPL", "PPL", "dPPL", "vs plain", "chosen");
  for (const auto& st : settings) {
    const Row& plain = rows[st.rows.front()];
    for (size_t i = 0; i < st.rows.size(); ++i) {
      const Row& r = rows[st.rows[i]];
      fmt::print("{:<18} {:<38} {:>7.3f} {:>8} {:>9} {:>9.4f} {:>+8.2f}% {:>+8.2f}%  {}\n",
                 i == 0 ? st.name : std::string(), r.transform, r.bits_per_weight, r.bytes,
                 num_or_dash(r.val_ppl), r.ppl, r.delta_ppl_pct, 100.0 * (r.ppl / plain.ppl - 1.0),
                 r.chosen ? "*" : "");
    }
  }
  fmt::print("\n");
  std::vector<std::string> hurt, kept;
  for (const auto& st : settings) {
    const Row& plain = rows[st.rows.front()];
    const Row& rot = rows[st.rows[st.best_rotation]];
    const double change = 100.0 * (rot.ppl / plain.ppl - 1.0);
    if (rot.ppl > plain.ppl) hurt.push_back(fmt::format("{} ({:+.2f}%)", st.name, change));
    if (st.chosen != 0) kept.push_back(fmt::format("{} ({})", st.name, rows[st.rows[st.chosen]].transform));
    const Row& chosen = rows[st.rows[st.chosen]];
    const std::string line = fmt::format(
        "{}: rotated (seed chosen on validation) PPL {:.4f} vs plain {:.4f} ({:+.2f}%); validation "
        "chose {} (PPL {:.4f}, {:+.2f}%)",
        st.name, rot.ppl, plain.ppl, change, chosen.transform, chosen.ppl,
        100.0 * (chosen.ppl / plain.ppl - 1.0));
    if (st.name == fmt::format("w3_g{}_gptq", o.group))
      fmt::print("goal: rotation lowers INT3 g{} GPTQ perplexity by >= 20%: {} -- {}\n", o.group,
                 change <= -20.0 ? "met" : "NOT met", line);
    else if (st.name == fmt::format("w4_g{}_gptq", o.group))
      fmt::print("goal: rotation does not make 4-bit g{} GPTQ worse: {} -- {}\n", o.group,
                 change <= 0.0 ? "met" : chosen.ppl <= plain.ppl ? "NOT met by the rotation, met by the choice"
                                                                 : "NOT met", line);
    else if (st.a8)
      fmt::print("report: {}\n", line);
  }
  const auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s.empty() ? std::string("none") : s;
  };
  fmt::print("rotation hurt (evaluation PPL above plain) in: {}\n", join(hurt));
  fmt::print("validation chose a transform over plain in: {}\n", join(kept));
}

int run(const Options& o) {
  using Clock = std::chrono::steady_clock;
  const auto t_start = Clock::now();
  const auto file = lowbit::io::GgufFile::open(o.model);
  const llama::Weights w = llama::load_weights(file, o.context);
  const llama::Tokenizer tok = llama::Tokenizer::from_gguf(file);
  std::ifstream tf(o.text);
  lowbit::detail::require(bool(tf), "--text: cannot read '{}'", o.text);
  std::stringstream ss;
  ss << tf.rdbuf();
  const auto halves = llama::split_halves(llama::split_chunks(ss.str()));
  std::vector<std::vector<int>> train_seqs;
  long train_tokens = 0;
  for (const auto& c : halves.calibration) {
    train_seqs.push_back(llama::chunk_tokens(tok, c, o.context));
    train_tokens += long(train_seqs.back().size());
  }
  llama::PerplexityOptions popt;
  popt.context = o.context;
  popt.min_predictions = o.min_predictions;

  const lowbit::Index n_weights = study::weight_count(w);
  const size_t fp32_bytes = study::model_bytes(w, {});
  std::vector<Row> rows;
  std::map<std::string, study::Plan> plans;  // by method name, for QAT initialisation
  // Every choice by measurement (the best PTQ method per width, the best allocator per budget,
  // rotation) is made on the tail of the calibration half, never on the evaluation half; the
  // chunks before the tail give the calibration statistics (the first --calib-tokens of them).
  const study::ValidationSplit vs =
      study::split_validation(halves.calibration, tok, o.context, o.val_predictions);
  llama::PerplexityOptions vopt = popt;
  vopt.all = true;  // every chunk of the held-out tail
  // `choose`: also score the model on the validation tail (Row::val_ppl), for a choice.
  auto evaluate = [&](const std::string& kind, const std::string& method, int bits,
                      const llama::Weights& weights, const study::Plan& plan,
                      lowbit::ActivationQuant act = lowbit::ActivationQuant::float32,
                      bool choose = false) -> Row& {
    progress(fmt::format("evaluating {} ...", method));
    llama::Model m = study::build_model(weights, plan, act);
    const double val = choose ? study::perplexity(m, vs.validation, tok, vopt).ppl
                              : std::numeric_limits<double>::quiet_NaN();
    const auto r = study::perplexity(m, halves.evaluation, tok, popt);
    Row row;
    row.kind = kind;
    row.method = method;
    row.weight_bits = bits;
    row.group_size = kind == "fp32" ? 0 : o.group;
    row.bytes = study::model_bytes(weights, plan);
    row.bits_per_weight = 8.0 * double(row.bytes) / double(n_weights);
    row.size_reduction_pct = 100.0 * (1.0 - double(row.bytes) / double(fp32_bytes));
    row.predictions = r.predictions;
    row.mean_nll = r.mean_nll;
    row.ppl = r.ppl;
    row.tokens_per_s = r.tokens_per_s;
    row.delta_ppl_pct = rows.empty() ? 0.0 : 100.0 * (r.ppl / rows.front().ppl - 1.0);
    row.activations = act == lowbit::ActivationQuant::int8 ? "int8" : "fp32";
    row.val_ppl = val;
    rows.push_back(row);
    progress_done();
    return rows.back();
  };

  evaluate("fp32", "fp32", 32, w, {});
  const auto calib = study::capture_calibration(w, vs.fit_sequences, o.calib_tokens);

  // Uniform PTQ: every method at every width; the best per width (on the validation tail) is
  // QAT's starting point.
  std::map<int, std::string> best_ptq;
  for (int b : o.bits) {
    const auto scheme = lowbit::Scheme::per_group(b, o.group);
    double best = std::numeric_limits<double>::infinity();
    for (const auto& method : o.methods) {
      const std::string name = fmt::format("w{}_g{}_{}", b, o.group, method);
      progress(fmt::format("PTQ {} ...", name));
      plans[name] = study::uniform_plan(w, calib, scheme, method);
      const Row& r = evaluate("ptq", name, b, w, plans[name], lowbit::ActivationQuant::float32, true);
      if (r.val_ppl < best) {  // chosen on the validation tail
        best = r.val_ppl;
        best_ptq[b] = name;
      }
    }
  }

  // Rotation (--rotate): per setting (width, activations, method), the candidates plain, fold
  // (norm gains folded) and fold + rotation (one per seed) are quantized the same way and scored
  // on the held-out calibration tail; the lowest validation perplexity is chosen. Every candidate
  // is also scored on the evaluation half, for the report only.
  struct Candidate {
    std::string suffix;  // method-name suffix: "", "_fold", "_rot" or "_rot_s<seed>"
    llama::Weights weights;
    llama::RotationRecord record;
    std::map<std::string, lowbit::ptq::Calibration> calib;
  };
  std::vector<RotationSetting> settings;
  std::vector<Candidate> transforms;
  if (!o.rotate.empty()) {
    transforms.push_back({"", w, {}, calib});
    llama::RotateOptions fold_only;
    fold_only.residual = false;
    const auto make_candidate = [&](const std::string& suffix, const llama::RotateOptions& ro) {
      progress(fmt::format("transforming ({}) and calibrating ...", suffix));
      llama::RotatedModel r = llama::rotate_model(w, ro);
      auto c = study::capture_calibration(r.weights, vs.fit_sequences, o.calib_tokens);
      transforms.push_back({suffix, std::move(r.weights), r.record, std::move(c)});
    };
    make_candidate("_fold", fold_only);
    for (int i = 0; i < o.rotate_seeds; ++i) {
      llama::RotateOptions ro;
      if (o.rotate != "auto") ro.kind = lowbit::ptq::parse_rotation_kind(o.rotate);
      ro.heads = o.rotate_heads;
      ro.seed = o.rotate_seed + uint64_t(i);
      make_candidate(o.rotate_seeds > 1 ? fmt::format("_rot_s{}", ro.seed) : std::string("_rot"), ro);
    }
    std::vector<std::pair<int, bool>> widths;  // (bits, INT8 activations)
    for (int b : o.bits) widths.emplace_back(b, false);
    for (int b : o.act_bits) widths.emplace_back(b, true);
    for (const auto& [b, a8] : widths) {
      const auto scheme = lowbit::Scheme::per_group(b, o.group);
      const auto act = a8 ? lowbit::ActivationQuant::int8 : lowbit::ActivationQuant::float32;
      for (const auto& method : o.methods) {
        RotationSetting st;
        st.name = a8 ? fmt::format("w{}a8_g{}_{}", b, o.group, method) : fmt::format("w{}_g{}_{}", b, o.group, method);
        st.a8 = a8;
        double best_val = std::numeric_limits<double>::infinity(), best_rot_val = best_val;
        for (size_t ci = 0; ci < transforms.size(); ++ci) {
          const Candidate& c = transforms[ci];
          const std::string name = st.name + c.suffix;
          progress(fmt::format("rotation: {} ...", name));
          const bool reuse = c.suffix.empty() && !a8 && plans.count(st.name) != 0;  // the PTQ row above
          const study::Plan plan = reuse ? plans[st.name]
                                         : study::uniform_plan(c.weights, c.calib, scheme, method, true);
          llama::Model vm = study::build_model(c.weights, plan, act);
          const double val = study::perplexity(vm, vs.validation, tok, vopt).ppl;
          size_t index = 0;
          if (reuse) {
            for (size_t k = 0; k < rows.size(); ++k)
              if (rows[k].kind == "ptq" && rows[k].method == st.name) index = k;
          } else {
            evaluate(c.suffix.empty() ? "ptq_a8" : "rotation", name, b, c.weights, plan, act);
            index = rows.size() - 1;
          }
          rows[index].transform = c.record.describe();
          rows[index].val_ppl = val;
          st.rows.push_back(index);
          if (val < best_val) {
            best_val = val;
            st.chosen = ci;
          }
          if (c.record.rotated() && val < best_rot_val) {
            best_rot_val = val;
            st.best_rotation = ci;
          }
        }
        rows[st.rows[st.chosen]].chosen = true;
        settings.push_back(std::move(st));
      }
    }
  }

  std::map<std::string, std::string> best_mixed;  // budget label -> best mixed PTQ method
  if (!o.rotation_only) {
    // Mixed precision: both allocators over widths {2,3,4,5,6,8} g32 (GPTQ), at bits/weight
    // budgets and at exactly the bytes of uniform INT3 / INT4 g32.
    progress("output Fisher of every Linear (training backward) ...");
    const auto fisher = study::output_fisher(w, train_seqs, o.calib_tokens);
    const auto layers = study::mixed_layers(w, calib, o.group, fisher);
    const auto candidates =
        lowbit::mixed::candidate_grid({2, 3, 4, 5, 6, 8}, o.mixed_groups, lowbit::mixed::Method::gptq);
    progress("measuring per-layer distortion curves ...");
    const auto costs = lowbit::mixed::measure_costs(layers, candidates, study::ptq_measure(calib, fisher));
    std::vector<std::pair<std::string, lowbit::mixed::Budget>> budgets;
    for (double b : o.budgets)
      budgets.emplace_back(budget_label(b), lowbit::mixed::Budget::bits_per_weight(b));
    for (int b : {3, 4})
      budgets.emplace_back(fmt::format("=w{}g{}", b, o.group),
                           lowbit::mixed::Budget::bytes(
                               study::allocated_bytes(w, lowbit::Scheme::per_group(b, o.group))));
    for (const auto& [label, budget] : budgets) {
      lowbit::mixed::ClosedFormOptions cf;
      cf.widths = {2, 3, 4, 5, 6, 8};
      cf.group_size = o.group;
      cf.method = lowbit::mixed::Method::gptq;
      // A budget below an allocator's smallest storage (e.g. 3 bits/weight with only 2-bit g32,
      // which is 3.02 with its scales) skips that allocator, with a note.
      std::vector<std::pair<std::string, lowbit::mixed::Allocation>> allocs;
      for (const char* alloc_name : {"measured", "closed"}) {
        try {
          allocs.emplace_back(alloc_name, alloc_name == std::string("measured")
                                              ? lowbit::mixed::allocate_measured(layers, costs, budget)
                                              : lowbit::mixed::allocate_closed_form(layers, budget, cf));
        } catch (const lowbit::Error& e) {
          fmt::print(stderr, "mixed {} at {}: skipped ({})\n", alloc_name, label, e.what());
        }
      }
      double best = std::numeric_limits<double>::infinity();
      for (const auto& [alloc_name, a] : allocs) {
        const std::string name = fmt::format("mixed{}_{}_gptq", label, alloc_name);
        plans[name] = study::plan_of(w, a, calib);
        const Row& r = evaluate("mixed_ptq", name, 0, w, plans[name], lowbit::ActivationQuant::float32, true);
        if (r.val_ppl < best) {  // chosen on the validation tail
          best = r.val_ppl;
          best_mixed[label] = name;
        }
      }
    }

    // QAT: fine-tune from the best PTQ at each width, and from the best mixed allocation at the
    // uniform INT3 / INT4 sizes.
    llama::train::QatOptions qopt;
    qopt.steps = o.qat_steps;
    qopt.batch_tokens = o.qat_batch;
    qopt.lr = o.qat_lr;
    qopt.loss = {o.ce, o.kd};
    qopt.seed = o.seed;
    auto qat = [&](const std::string& kind, const std::string& name, int bits,
                   const study::Plan& init) {
      llama::Weights trained;
      const auto t0 = Clock::now();
      const study::Plan plan = study::run_qat(w, init, train_seqs, qopt, trained,
                                              [&](const llama::train::QatStep& s) {
                                                progress(fmt::format("QAT {}: step {}/{} KL {:.4f}",
                                                                     name, s.step + 1, qopt.steps,
                                                                     s.kl));
                                              });
      const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
      progress_done();
      evaluate(kind, name, bits, trained, plan);
      fmt::print(stderr, "QAT {}: {} steps in {:.0f} s\n", name, qopt.steps, secs);
    };
    for (int b : o.qat_bits)
      if (best_ptq.count(b)) qat("qat", fmt::format("w{}_g{}_qat", b, o.group), b, plans[best_ptq[b]]);
    for (int b : {3, 4}) {
      const std::string label = fmt::format("=w{}g{}", b, o.group);
      if (best_mixed.count(label))
        qat("mixed_qat", fmt::format("mixed{}_qat", label), 0, plans[best_mixed[label]]);
    }
  }

  // Best-of flags: one PTQ row per width, one mixed PTQ row per budget.
  for (auto& r : rows) {
    if (r.kind == "ptq") r.best = best_ptq[r.weight_bits] == r.method;
    if (r.kind == "mixed_ptq")
      for (const auto& [label, name] : best_mixed)
        if (r.method.rfind("mixed" + label + "_", 0) == 0) r.best = name == r.method;
    if (r.kind == "rotation") r.best = r.chosen;  // plotted; listed in the rotation table
    if (r.kind == "ptq_a8") r.best = false;
  }

  // The table.
  fmt::print("lowbit study: {} ({} weights, {} bytes FP32), {} evaluation predictions\n", o.model,
             n_weights, fp32_bytes, rows.front().predictions);
  if (!o.rotation_only)
    fmt::print("QAT: {} steps x {} tokens, Adam lr {}, loss {}*CE + {}*KL(FP32 || model), on the "
               "calibration half ({} chunks, {} tokens)\n",
               o.qat_steps, o.qat_batch, o.qat_lr, o.ce, o.kd, train_seqs.size(), train_tokens);
  fmt::print("best of: the PTQ method per width (QAT's start) and the allocator per budget are chosen by "
             "the perplexity on the held-out tail of the calibration half ({} chunks, {} predictions), "
             "never on the evaluation half\n\n",
             vs.validation.size(), vs.validation_predictions);
  fmt::print("{:<10} {:<30} {:>6} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9}\n", "kind", "method", "bits",
             "bits/w", "bytes", "smaller", "PPL", "dPPL", "tok/s");
  for (const auto& r : rows) {
    if (!r.best || r.kind == "rotation" || r.kind == "ptq_a8") continue;
    fmt::print("{:<10} {:<30} {:>6} {:>9.3f} {:>9} {:>8.1f}% {:>8.4f} {:>+7.2f}% {:>9.0f}\n", r.kind,
               r.method, r.weight_bits == 0 ? std::string("mix") : std::to_string(r.weight_bits),
               r.bits_per_weight, r.bytes, r.size_reduction_pct, r.ppl, r.delta_ppl_pct,
               r.tokens_per_s);
  }
  const auto h = study::headline(rows);
  auto pct = [](double v) { return std::isnan(v) ? std::string("none") : fmt::format("{:.1f}%", v); };
  fmt::print("\nlargest size reduction within 6% of FP32 PPL: {} ({})\n",
             pct(h.max_reduction_within_6), h.method_within_6);
  fmt::print("largest size reduction within 3% of FP32 PPL: {} ({})\n",
             pct(h.max_reduction_within_3), h.method_within_3);
  fmt::print("best dPPL at >= 68% size reduction: {} ({})\n",
             std::isnan(h.delta_at_68) ? std::string("none") : fmt::format("{:+.2f}%", h.delta_at_68),
             h.method_at_68);
  // Targets.
  auto find = [&](const std::string& m) -> const Row* {
    for (const auto& r : rows)
      if (r.method == m) return &r;
    return nullptr;
  };
  for (int b : {3, 4}) {
    const std::string label = fmt::format("=w{}g{}", b, o.group);
    const Row* mixed = best_mixed.count(label) ? find(best_mixed[label]) : nullptr;
    const Row* uni = best_ptq.count(b) ? find(best_ptq[b]) : nullptr;
    if (mixed && uni)
      fmt::print("target: mixed beats uniform at the INT{} g{} size: {} (PPL {:.4f} vs {:.4f})\n", b,
                 o.group, mixed->ppl < uni->ppl ? "met" : "NOT met", mixed->ppl, uni->ppl);
  }
  for (int b : {3, 2}) {
    const Row* q = find(fmt::format("w{}_g{}_qat", b, o.group));
    const Row* p = best_ptq.count(b) ? find(best_ptq[b]) : nullptr;
    if (q && p)
      fmt::print("target: QAT beats the best PTQ at INT{}: {} (PPL {:.4f} vs {:.4f})\n", b,
                 q->ppl < p->ppl ? "met" : "NOT met", q->ppl, p->ppl);
  }
  fmt::print("target: >= 80% size reduction within 3% of FP32 PPL: {}\n",
             !std::isnan(h.max_reduction_within_3) && h.max_reduction_within_3 >= 80.0 ? "met"
                                                                                       : "NOT met");
  if (!o.rotate.empty()) print_rotation(o, vs, rows, settings);

  if (!o.csv.empty()) {
    write_csv(o.csv, rows);
    fmt::print("wrote {}\n", o.csv);
    if (!o.plot.empty()) {
      if (write_plot(o.plot, o.csv, rows))
        fmt::print("wrote {} (gnuplot)\n", o.plot);
      else
        fmt::print("no plot: gnuplot is not installed (apt-get install gnuplot-nox), or it failed\n");
    }
  }
  if (!o.json.empty()) {
    nlohmann::json j;
    j["model"] = o.model;
    j["fp32_bytes"] = fp32_bytes;
    j["weights"] = n_weights;
    j["rows"] = nlohmann::json::array();
    for (const auto& r : rows) j["rows"].push_back(to_json(r));
    auto num = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
    j["headline"] = {{"max_reduction_within_6pct", num(h.max_reduction_within_6)},
                     {"method_within_6pct", h.method_within_6},
                     {"max_reduction_within_3pct", num(h.max_reduction_within_3)},
                     {"method_within_3pct", h.method_within_3},
                     {"best_delta_ppl_at_68pct", num(h.delta_at_68)},
                     {"method_at_68pct", h.method_at_68}};
    if (!o.rotate.empty()) {
      nlohmann::json rs = nlohmann::json::array();
      for (const auto& st : settings) {
        nlohmann::json cands = nlohmann::json::array();
        for (size_t i : st.rows) cands.push_back(rows[i].method);
        rs.push_back({{"setting", st.name},
                      {"activations", st.a8 ? "int8" : "fp32"},
                      {"candidates", cands},
                      {"chosen", rows[st.rows[st.chosen]].method},
                      {"best_rotation", rows[st.rows[st.best_rotation]].method}});
      }
      j["rotation"] = {{"kind", o.rotate},
                       {"heads", o.rotate_heads},
                       {"seeds", {o.rotate_seed, o.rotate_seed + uint64_t(o.rotate_seeds) - 1}},
                       {"validation_chunks", vs.validation.size()},
                       {"validation_predictions", vs.validation_predictions},
                       {"settings", rs}};
    }
    std::ofstream f(o.json);
    lowbit::detail::require(bool(f), "--json: cannot write '{}'", o.json);
    f << j.dump(2) << "\n";
    fmt::print("wrote {}\n", o.json);
  }
  fmt::print("total time {:.0f} s\n",
             std::chrono::duration<double>(Clock::now() - t_start).count());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Training allocates and frees the same large activations every step: keep them in the heap.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  CLI::App app{"lowbit's study on a llama GGUF: FP32 vs PTQ vs QAT vs mixed precision"};
  Options o;
  app.add_option("--model", o.model, "llama GGUF file")->capture_default_str();
  app.add_option("--text", o.text, "text: first half of its blank-line chunks calibrates/trains, "
                                   "the second half is scored")->capture_default_str();
  app.add_option("--ctx", o.context, "training context of the model")->capture_default_str();
  app.add_option("--min-predictions", o.min_predictions, "evaluation predictions")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--calib-tokens", o.calib_tokens, "calibration tokens for PTQ/mixed")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--group", o.group, "group size")->check(CLI::Range(8, 4096))->capture_default_str();
  app.add_option("--bits", o.bits, "uniform widths")->check(CLI::Range(2, 8));
  app.add_option("--qat-bits", o.qat_bits, "widths to run QAT at")->check(CLI::Range(2, 8));
  app.add_option("--methods", o.methods, "PTQ methods: rtn gamma gptq");
  app.add_option("--budgets", o.budgets, "mixed-precision budgets, bits/weight")
      ->check(CLI::Range(2.0, 32.0));
  app.add_option("--mixed-groups", o.mixed_groups, "group sizes the measured allocator may pick")
      ->check(CLI::Range(8, 4096));
  app.add_option("--qat-steps", o.qat_steps, "Adam steps per QAT run")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--qat-batch", o.qat_batch, "predictions per QAT step")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--qat-lr", o.qat_lr, "QAT learning rate")->capture_default_str();
  app.add_option("--kd", o.kd, "weight of KL(FP32 || model)")->capture_default_str();
  app.add_option("--ce", o.ce, "weight of next-token cross-entropy")->capture_default_str();
  app.add_option("--seed", o.seed, "QAT batch order seed")->capture_default_str();
  app.add_option("--json", o.json, "write rows and headline figures as JSON");
  app.add_option("--csv", o.csv, "write every row as CSV ('' to skip)")->capture_default_str();
  app.add_option("--plot", o.plot, "PNG plot drawn by gnuplot ('' to skip)")->capture_default_str();
  app.add_flag("--quick", o.quick,
               "a few minutes: γ-search+GPTQ, budgets 4.5 and 6, QAT at INT4/3/2 for 30 steps of 1024");
  app.add_option("--rotate", o.rotate,
                 "add rotated rows: fold the norms, rotate the residual stream (auto: Hadamard where "
                 "the width has one, else random orthogonal), quantize as above; chosen per setting "
                 "on a held-out tail of the calibration half")
      ->check(CLI::IsMember({"auto", "hadamard", "random", "random_orthogonal"}));
  app.add_flag("--rotate-heads", o.rotate_heads, "also rotate each head's value/output pair");
  app.add_option("--rotate-seeds", o.rotate_seeds, "rotation seeds to try (chosen on validation)")
      ->check(CLI::Range(1, 64))->capture_default_str();
  app.add_option("--rotate-seed", o.rotate_seed, "first rotation seed")->capture_default_str();
  app.add_option("--val-predictions", o.val_predictions,
                 "predictions in the held-out tail of the calibration half every choice is made on")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--act-bits", o.act_bits, "weight widths of the W<b>A8 settings (with --rotate)")
      ->check(CLI::Range(2, 8));
  app.add_flag("--rotation-only", o.rotation_only, "skip mixed precision and QAT");
  CLI11_PARSE(app, argc, argv);
  if (o.quick) {  // a few minutes on one loaded core
    o.methods = {"gamma", "gptq"};  // RTN is never the best of the three here
    o.budgets = {4.5, 6};
    o.qat_bits = {4, 3, 2};
    o.qat_steps = std::min(o.qat_steps, 30);
    o.qat_batch = std::min(o.qat_batch, 1024L);
  }
  try {
    return run(o);
  } catch (const std::exception& e) {
    fmt::print(stderr, "llama_study: {}\n", e.what());
    return 1;
  }
}
