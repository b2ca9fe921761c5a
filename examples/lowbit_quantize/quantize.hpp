// quantize.hpp: lowbit-quantize's pipeline: a llama GGUF and a calibration text in, a quantized
// GGUF (types llama.cpp loads) out, streamed block by block: memory-mapped input, one block's
// weights in float at a time, sequential calibration, output tensors written as they are done.
#pragma once

#include "../llama/export.hpp"
#include "../llama/gguf_model.hpp"
#include "../llama/model.hpp"
#include "../llama/perplexity.hpp"
#include "../llama/rotate.hpp"
#include "../llama/stream.hpp"
#include "../llama/tokenizer.hpp"
#include "../llama_train/fisher.hpp"

#include <lowbit/core/error.hpp>
#include <lowbit/formats/format.hpp>
#include <lowbit/io/gguf.hpp>
#include <lowbit/mixed/closed_form.hpp>
#include <lowbit/mixed/measured.hpp>
#include <lowbit/ptq/calibration.hpp>
#include <lowbit/ptq/format_awq.hpp>
#include <lowbit/ptq/format_gamma.hpp>
#include <lowbit/ptq/format_gptq.hpp>
#include <lowbit/ptq/format_rtn.hpp>
#include <lowbit/ptq/rotation.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lbq {

using lowbit::Index;
using lowbit::MatrixXfR;
using lowbit::formats::Type;
using llama::TensorChoice;
using llama::TensorRole;

/// Everything lowbit-quantize is told (see lowbit_quantize.cpp for the command line).
struct Options {
  std::string model, calib, out, report;
  std::string type;  ///< --type T (uniform), or empty with --bpw
  std::string bpw;   ///< --bpw: bits per weight, or a type name (the bytes of uniform --type T)
  std::string method = "gptq";  ///< gptq, awq, gamma, rtn
  std::vector<std::string> types = {"Q2_K", "Q3_K", "Q4_0", "Q4_1", "Q4_K",
                                    "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0"};
  std::vector<std::string> keep;           ///< REGEX=TYPE
  std::string allocator = "measured";      ///< measured, closed-form
  bool calib_fp32 = false;                 ///< calibrate every block on FP32 inputs
  /// The sequential stream's activations into stored block tensors: int8 (lowbit's integer
  /// kernels, as lowbit's engine runs the file) or float32 (the decoded weights).
  std::string calib_activations = "int8";
  int threads = 0;                         ///< 0: all cores (OpenMP)
  int context = 512;                       ///< positions per calibration / validation chunk
  long calib_tokens = 0;                   ///< 0: max(20000, 4 × the largest in_features)
  bool rotate = false;                     ///< try folded rotations, choose on validation
  int rotate_seeds = 1;
  uint64_t rotate_seed = 0;
  bool rotate_heads = false;
  long val_predictions = 10000;            ///< held-out tail of the calibration half (--rotate)
  Index measure_rows = 512;                ///< rows per tensor the --bpw measurement quantizes
  long fisher_tokens = 4096;               ///< tokens of the Fisher backward (0: relative errors)
  uint64_t fisher_max_weights = 300000000; ///< larger models use relative output errors
};

/// One tensor of the written file.
struct TensorReport {
  std::string name;
  std::vector<uint64_t> ne;
  std::string type, wanted, rule, method;
  uint64_t bytes = 0, weights = 0;
  double rel_error = std::numeric_limits<double>::quiet_NaN();  ///< ‖X(W−Ŵ)ᵀ‖² / ‖XWᵀ‖²
  bool quantizable = false;
  double bits_per_weight() const { return weights ? 8.0 * double(bytes) / double(weights) : 0; }
};

/// One rotation candidate's outcome (with --rotate).
struct CandidateReport {
  std::string transform;  ///< RotationRecord::describe(): "none", "fold+hadamard(seed 0)", ...
  double val_ppl = std::numeric_limits<double>::quiet_NaN();
  long val_predictions = 0;
  bool chosen = false;
};

/// What a run did.
struct RunReport {
  std::string model, out, method, target, allocator, calibration;
  std::vector<TensorReport> tensors;
  std::vector<std::string> fallbacks;  ///< "name: Q4_K -> Q5_0 (rows of 172)"
  uint64_t file_bytes = 0, input_bytes = 0, quantized_bytes = 0, quantized_weights = 0;
  uint64_t budget_bytes = 0;  ///< --bpw: what the quantized tensors may take
  bool allocation_exact = false;
  double allocation_distortion = std::numeric_limits<double>::quiet_NaN();
  std::string distortion;  ///< "fisher" or "relative"
  long calib_tokens = 0, calib_sequences = 0, tokens_available = 0, tokens_needed = 0;
  std::vector<CandidateReport> candidates;
  std::string rotation = "none";  ///< the chosen transform
  double val_ppl = std::numeric_limits<double>::quiet_NaN();
  double seconds = 0;
  double quantized_bits_per_weight() const {
    return quantized_weights ? 8.0 * double(quantized_bytes) / double(quantized_weights) : 0;
  }
};

/// Progress: a phase, the block being worked on (−1 outside blocks), the tensor, and the fraction
/// of the whole run's work done.
struct Progress {
  std::string phase, tensor;
  int block = -1, blocks = 0;
  double done = 0;
};
using ProgressFn = std::function<void(const Progress&)>;

namespace detail {

using lowbit::detail::fail;
using lowbit::detail::require;

inline bool is_block_format(Type t) { return lowbit::formats::find_format(t) != nullptr; }

/// The ggml type named `name` that lowbit can write (block formats, F32/F16/BF16).
inline Type parse_writable_type(const std::string& what, const std::string& name) {
  const auto t = lowbit::formats::parse_type(name);
  require(t.has_value() && (is_block_format(*t) || lowbit::formats::detail::is_plain(*t)),
          "{}: '{}' is not a type lowbit writes ({})", what, name,
          lowbit::formats::detail::supported_list(true));
  return *t;
}

/// Rows [r0, r1) of tensor `t` of `f`, decoded to float.
inline MatrixXfR read_rows(const lowbit::io::GgufFile& f, const lowbit::io::TensorInfo& t, Index r0,
                           Index r1) {
  MatrixXfR m(r1 - r0, t.cols());
  const uint64_t rb = t.row_bytes();
  const uint8_t* p = f.tensor_data(t) + uint64_t(r0) * rb;
  for (Index r = r0; r < r1; ++r)
    lowbit::formats::decode_row(t.type, p + uint64_t(r - r0) * rb, t.cols(), m.data() + (r - r0) * t.cols());
  require(m.allFinite(), "gguf: tensor '{}': rows {}..{} hold non-finite values", t.name, r0, r1 - 1);
  return m;
}

inline MatrixXfR read_matrix(const lowbit::io::GgufFile& f, const std::string& name) {
  const auto& t = f.tensor(name);
  return read_rows(f, t, 0, t.rows());
}

inline Eigen::VectorXf read_vector(const lowbit::io::GgufFile& f, const std::string& name) {
  const MatrixXfR m = read_matrix(f, name);
  return Eigen::Map<const Eigen::VectorXf>(m.data(), m.size());
}

/// One block's float weights.
inline llama::LayerWeights read_layer(const lowbit::io::GgufFile& f, int l) {
  const std::string p = "blk." + std::to_string(l) + ".";
  llama::LayerWeights L;
  L.wq = read_matrix(f, p + "attn_q.weight");
  L.wk = read_matrix(f, p + "attn_k.weight");
  L.wv = read_matrix(f, p + "attn_v.weight");
  L.wo = read_matrix(f, p + "attn_output.weight");
  L.w_gate = read_matrix(f, p + "ffn_gate.weight");
  L.w_down = read_matrix(f, p + "ffn_down.weight");
  L.w_up = read_matrix(f, p + "ffn_up.weight");
  L.attn_norm = read_vector(f, p + "attn_norm.weight");
  L.ffn_norm = read_vector(f, p + "ffn_norm.weight");
  return L;
}

/// Checks a llama GGUF's tensors before anything runs: every tensor a llama needs, with the
/// shapes its hyper-parameters give, of a type lowbit can decode.
inline void check_input(const lowbit::io::GgufFile& f, const llama::Config& c) {
  for (const auto& t : f.tensors())
    require(lowbit::formats::detail::is_plain(t.type) || is_block_format(t.type),
            "--model: tensor '{}' has type {}, which lowbit cannot read (supported input types: "
            "{})", t.name, lowbit::formats::to_string(t.type),
            lowbit::formats::detail::supported_list(true));
  const Index q = Index(c.n_heads) * c.head_dim, kv = Index(c.n_kv_heads) * c.head_dim;
  const auto need = [&](const std::string& name, Index rows, Index cols) {
    const lowbit::io::TensorInfo* t = f.find_tensor(name);
    require(t != nullptr, "--model: not a llama GGUF lowbit can quantize: tensor '{}' is missing", name);
    require(t->ne.size() <= 2 && t->rows() == rows && t->cols() == cols,
            "--model: tensor '{}': expected [{}][{}] (row-major), got [{}][{}]", name, rows, cols,
            t->rows(), t->cols());
  };
  need("token_embd.weight", c.vocab_size, c.dim);
  need("output_norm.weight", 1, c.dim);
  if (f.find_tensor("output.weight")) need("output.weight", c.vocab_size, c.dim);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    need(p + "attn_q.weight", q, c.dim);
    need(p + "attn_k.weight", kv, c.dim);
    need(p + "attn_v.weight", kv, c.dim);
    need(p + "attn_output.weight", c.dim, q);
    need(p + "ffn_gate.weight", c.hidden_dim, c.dim);
    need(p + "ffn_up.weight", c.hidden_dim, c.dim);
    need(p + "ffn_down.weight", c.dim, c.hidden_dim);
    need(p + "attn_norm.weight", 1, c.dim);
    need(p + "ffn_norm.weight", 1, c.dim);
  }
}

/// Calibration and validation token sequences from the calibration half of a text.
struct CalibrationText {
  std::vector<std::vector<int>> fit;         ///< the sequences calibration uses
  std::vector<std::vector<int>> validation;  ///< the held-out tail (with --rotate)
  long fit_tokens = 0, available_tokens = 0, validation_predictions = 0;
  size_t chunks = 0, half_chunks = 0;
};

/// Reads `path`, splits it into blank-line chunks, keeps the first half (the study's
/// calibration half); with `val_predictions` > 0 its tail of chunks holding that many predictions
/// is held out for validation; calibration takes chunks from the start until `want` tokens.
/// Throws when the text cannot give `needed` tokens, saying how many it has and why they are needed.
inline CalibrationText read_calibration(const std::string& path, const llama::Tokenizer& tok,
                                        int context, long want, long needed, long val_predictions,
                                        const std::string& largest) {
  std::ifstream in(path, std::ios::binary);
  require(bool(in), "--calib: cannot read '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  const auto chunks = llama::split_chunks(ss.str());
  const auto halves = llama::split_halves(chunks);
  CalibrationText ct;
  ct.chunks = chunks.size();
  ct.half_chunks = halves.calibration.size();
  size_t cut = halves.calibration.size();
  if (val_predictions > 0) {
    while (cut > 0 && ct.validation_predictions < val_predictions) {
      --cut;
      auto ids = llama::chunk_tokens(tok, halves.calibration[cut], context);
      if (ids.size() >= 2) {
        ct.validation_predictions += long(ids.size()) - 1;
        ct.validation.insert(ct.validation.begin(), std::move(ids));
      }
    }
    require(ct.validation_predictions >= val_predictions && cut > 0,
            "--calib: the calibration half of '{}' ({} chunks) cannot hold {} validation "
            "predictions and a calibration part", path, ct.half_chunks, val_predictions);
  }
  std::vector<std::vector<int>> all;
  for (size_t i = 0; i < cut; ++i) {
    auto ids = llama::chunk_tokens(tok, halves.calibration[i], context);
    if (ids.size() < 2) continue;
    ct.available_tokens += long(ids.size());
    all.push_back(std::move(ids));
  }
  require(ct.available_tokens >= needed,
          "--calib: '{}' is too short: the first half of its {} blank-line chunks gives {} "
          "calibration tokens{}, but GPTQ's rule of about 4 x in_features needs {} (the largest "
          "layer input, '{}', has {} features)",
          path, ct.chunks, ct.available_tokens,
          val_predictions > 0 ? " besides the validation tail" : "", needed, largest, needed / 4);
  for (auto& s : all) {
    if (ct.fit_tokens >= want) break;
    ct.fit_tokens += long(s.size());
    ct.fit.push_back(std::move(s));
  }
  return ct;
}

/// Token counts of the calibration sequences (per vocabulary entry).
inline Eigen::VectorXd token_counts(const std::vector<std::vector<int>>& seqs, int vocab) {
  Eigen::VectorXd n = Eigen::VectorXd::Zero(vocab);
  for (const auto& s : seqs)
    for (int t : s) n[t] += 1.0;
  return n;
}

/// Packed hidden states: the rows of `table` (rows [r0, r1) of the embedding) for every token.
inline void embed_rows(const std::vector<std::vector<int>>& seqs, const MatrixXfR& rows, Index r0,
                       llama::Packed& P) {
  Index i = 0;
  for (const auto& s : seqs)
    for (int t : s) {
      if (t >= r0 && t < r0 + rows.rows()) P.x.row(i) = rows.row(t - r0);
      ++i;
    }
}

inline llama::Packed make_packed(const std::vector<std::vector<int>>& seqs, int dim) {
  llama::Packed P;
  P.offsets = llama::offsets_of(seqs);
  P.x.setZero(P.offsets.back(), dim);
  return P;
}

/// Adds rows of x to a calibration, chunk by chunk.
inline void add_rows(lowbit::ptq::Calibration& c, const MatrixXfR& x) {
  llama::for_row_chunks(x.rows(), 8192, [&](Index r0, Index r1) { c.add(x.middleRows(r0, r1 - r0)); });
}

/// A tensor quantized by the pipeline: its bytes, the decoded weights and its relative output
/// error on the calibration statistics.
struct Quantized {
  std::vector<uint8_t> bytes;
  MatrixXfR deq;
  double rel_error = std::numeric_limits<double>::quiet_NaN();
};

inline lowbit::ptq::FormatGptqOptions gptq_opts() { return {}; }

/// A quantized tensor as the engine runs it: a block type on lowbit's kernels with int8
/// activations (BlockLinear over its bytes), any other type (F16, IQ4_NL, ...) as its decoded floats.
inline std::shared_ptr<const llama::Linear> stored_linear(Type type, Quantized&& q, Index rows, Index cols) {
  if (lowbit::has_block_kernels(type))
    return std::make_shared<llama::BlockLinear>(type, q.bytes.data(), rows, cols, lowbit::ActivationQuant::int8);
  return std::make_shared<llama::Fp32Linear>(std::move(q.deq));
}

/// Quantizes a weight matrix W (reading the input of `calib`) as `type` with `method`:
/// non-block types are converted; rtn: the format's plain rounding; gamma, awq (W already scaled,
/// calib the scaled inputs): format_gamma on the output error; gptq: format_gptq_rows with
/// `factor` (computed from calib when null).
inline Quantized quantize_weight(const MatrixXfR& W, Type type, const std::string& method,
                                 const lowbit::ptq::Calibration* calib,
                                 const lowbit::ptq::GptqFactor* factor, bool with_error = true) {
  Quantized q;
  if (!is_block_format(type) || method == "rtn" || calib == nullptr) {
    q.bytes = lowbit::formats::quantize_matrix(type, W);
  } else if (method == "gptq") {
    std::optional<lowbit::ptq::GptqFactor> own;
    if (!factor) own = lowbit::ptq::gptq_factor(*calib, gptq_opts());
    q.bytes.resize(size_t(W.rows()) * size_t(lowbit::formats::row_bytes(type, uint64_t(W.cols()))));
    lowbit::ptq::format_gptq_rows(W, type, factor ? *factor : *own, gptq_opts(), q.bytes.data());
  } else {
    q.bytes = lowbit::ptq::format_gamma(W, type, *calib).data;
  }
  q.deq = lowbit::formats::decode_matrix(type, q.bytes.data(), W.rows(), W.cols());
  if (calib && with_error) q.rel_error = lowbit::ptq::relative_output_error(W, q.deq, *calib);
  return q;
}

/// An embedding table (a lookup: no input statistics) as `type`: the plain rounding for rtn and
/// non-block types, else the γ-search of its weight error on the format's grid.
inline std::vector<uint8_t> quantize_table(const MatrixXfR& E, Type type, const std::string& method) {
  if (!is_block_format(type) || method == "rtn") return lowbit::formats::quantize_matrix(type, E);
  return lowbit::ptq::format_gamma(E, type).data;
}

/// Σ_r w_r · M_r·G·M_rᵀ (w empty: 1) over the rows of M, on the statistics G (float): with M = W −
/// W_hat a (weighted) output error, with M = W the layer's output energy.
inline double weighted_output_energy(const MatrixXfR& M, const Eigen::MatrixXf& G, const Eigen::VectorXd& w) {
  const Eigen::VectorXd e = lowbit::ptq::detail::output_sse_rows(M, G);
  return w.size() == 0 ? e.sum() : w.dot(e);
}

/// Mean of a vector (1 when empty).
inline double mean_or_one(const Eigen::VectorXd& v) { return v.size() ? v.mean() : 1.0; }

/// Peak anonymous memory sampler: reads RssAnon from /proc/self/status.
inline long rss_anon_kb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("RssAnon:", 0) == 0) return std::stol(line.substr(8));
  return 0;
}

}  // namespace detail

/// A rotation candidate: the transform applied to every block before quantization.
struct Transform {
  bool rotated = false;
  llama::RotateOptions options;
  std::optional<lowbit::ptq::Rotation> q;  ///< the residual rotation
  llama::RotationRecord record;
};

/// The pipeline. Construct, then run(): see Options.
class Quantizer {
 public:
  explicit Quantizer(Options o, ProgressFn progress = {}) : o_(std::move(o)), progress_(std::move(progress)) {}

  /// Runs everything; throws lowbit::Error (nothing written at `out`) for bad input.
  RunReport run() {
    const auto t0 = std::chrono::steady_clock::now();
    validate_options();
    file_ = std::make_unique<lowbit::io::GgufFile>(lowbit::io::GgufFile::open(o_.model));
    const lowbit::io::GgufFile& f = *file_;
#ifdef _OPENMP
    // --threads 0: every core, except for small models (under 10M weights), whose small matrix
    // products run faster on one thread than split (and much faster on a busy machine).
    uint64_t elements = 0;
    for (const auto& t : f.tensors()) elements += t.n_elements;
    threads_ = o_.threads > 0 ? o_.threads : (elements < 10'000'000 ? 1 : omp_get_max_threads());
    omp_set_num_threads(threads_);
    Eigen::setNbThreads(threads_);
#endif
    config_ = llama::config_from_gguf(f, o_.context);
    detail::check_input(f, config_);
    tok_ = std::make_unique<llama::Tokenizer>(llama::Tokenizer::from_gguf(f));
    tied_ = f.find_tensor("output.weight") == nullptr;
    // The output path before any work: not the input, in a writable folder.
    { lowbit::io::OutputFile probe(o_.out, {o_.model}); }
    report_.model = o_.model;
    report_.out = o_.out;
    report_.method = o_.method;
    report_.input_bytes = f.file_size();
    report_.calibration = o_.calib_fp32 ? "fp32" : "sequential, " + o_.calib_activations + " activations";
    // The budget (or target) is checked against the types before the text is read.
    plan_keep();
    const Index q_dim = Index(config_.n_heads) * config_.head_dim;
    Index largest = std::max<Index>({Index(config_.dim), q_dim, Index(config_.hidden_dim)});
    std::string largest_name = largest == config_.hidden_dim ? "blk.0.ffn_down.weight"
                               : largest == q_dim           ? "blk.0.attn_output.weight"
                                                            : "blk.0.attn_q.weight";
    const long needed = 4 * long(largest);
    // Default: what a calibration forward pass of about 2·10^10 multiplies by the block weights
    // allows (all of stories260K's calibration half; 4 x in_features for a 1B model).
    double block_weights = 0;
    for (const auto& t : f.tensors())
      if (t.name.rfind("blk.", 0) == 0 && t.ne.size() >= 2) block_weights += double(t.n_elements);
    const long want = o_.calib_tokens > 0 ? std::max(o_.calib_tokens, needed)
                                          : std::max(needed, long(2e10 / std::max(block_weights, 1.0)));
    text_ = detail::read_calibration(o_.calib, *tok_, o_.context, want, needed,
                                     o_.rotate ? o_.val_predictions : 0, largest_name);
    report_.calib_tokens = text_.fit_tokens;
    report_.calib_sequences = long(text_.fit.size());
    report_.tokens_available = text_.available_tokens;
    report_.tokens_needed = needed;
    counts_ = detail::token_counts(text_.fit, config_.vocab_size);

    // Candidates: the plain model, and with --rotate the folded rotations (one per seed).
    std::vector<Transform> cands(1);
    if (o_.rotate)
      for (int i = 0; i < o_.rotate_seeds; ++i) {
        Transform t;
        t.rotated = true;
        t.options.heads = o_.rotate_heads;
        t.options.seed = o_.rotate_seed + uint64_t(i);
        t.q = llama::residual_rotation(config_, t.options);
        t.record.norms_folded = true;
        t.record.residual = std::string(lowbit::ptq::to_string(t.q->kind()));
        t.record.seed = t.options.seed;
        if (t.options.heads)
          t.record.heads = std::string(lowbit::ptq::to_string(
              lowbit::ptq::Rotation::automatic(config_.head_dim, 0).kind()));
        t.record.head_untied = tied_;
        cands.push_back(std::move(t));
      }
    total_work_ = double(cands.size()) * (bpw_mode() ? 2.0 : 1.0);
    RunReport best;
    std::vector<std::string> files;
    size_t best_index = 0;
    try {
      for (size_t k = 0; k < cands.size(); ++k) {
        cand_ = k;
        const std::string path = cands.size() == 1 ? o_.out : o_.out + ".candidate-" + std::to_string(k);
        RunReport r = run_candidate(cands[k], path);
        files.push_back(path);
        CandidateReport c;
        c.transform = cands[k].rotated ? cands[k].record.describe() : "none";
        c.val_ppl = r.val_ppl;
        c.val_predictions = text_.validation_predictions;
        report_.candidates.push_back(c);
        if (k == 0 || r.val_ppl < best.val_ppl) {
          best = std::move(r);
          best_index = k;
        }
      }
      if (cands.size() > 1) {
        report_.candidates[best_index].chosen = true;
        finalize_choice(files[best_index], cands[best_index]);
        for (size_t k = 0; k < files.size(); ++k) std::remove(files[k].c_str());
        best.file_bytes = lowbit::io::GgufFile::open(o_.out).file_size();
      }
    } catch (...) {
      for (const auto& p : files)
        if (cands.size() > 1) std::remove(p.c_str());
      throw;
    }
    best.candidates = report_.candidates;
    best.rotation = report_.candidates[best_index].transform;
    best.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return best;
  }

 private:
  bool bpw_mode() const { return o_.type.empty(); }

  void validate_options() {
    using detail::require;
    require(!o_.model.empty(), "--model: expected a llama GGUF file");
    require(!o_.calib.empty(), "--calib: expected a calibration text file");
    require(!o_.out.empty(), "--out: expected an output file name");
    require(o_.type.empty() != o_.bpw.empty(), "expected exactly one of --type T and --bpw B");
    require(o_.method == "gptq" || o_.method == "awq" || o_.method == "gamma" || o_.method == "rtn",
            "--method: expected gptq, awq, gamma or rtn, got '{}'", o_.method);
    require(o_.allocator == "measured" || o_.allocator == "closed-form",
            "--allocator: expected measured or closed-form, got '{}'", o_.allocator);
    require(o_.calib_activations == "int8" || o_.calib_activations == "float32",
            "--calib-activations: expected int8 or float32, got '{}'", o_.calib_activations);
    require(o_.threads >= 0, "--threads: expected >= 0, got {}", o_.threads);
    require(o_.context >= 2, "--ctx: expected >= 2, got {}", o_.context);
    require(o_.rotate_seeds >= 1, "--rotate-seeds: expected >= 1, got {}", o_.rotate_seeds);
    require(o_.measure_rows >= 1, "--measure-rows: expected >= 1, got {}", o_.measure_rows);
    if (!o_.type.empty()) target_ = detail::parse_writable_type("--type", o_.type);
    for (const auto& t : o_.types) types_.push_back(detail::parse_writable_type("--types", t));
    require(!types_.empty() || o_.type.size(), "--types: expected at least one type");
    for (const auto& k : o_.keep) keep_.push_back(llama::parse_keep(k));
  }

  /// Types of the uniform target (and the --bpw budget, checked against the smallest allowed
  /// allocation, before any work).
  void plan_keep() {
    const auto base = llama::export_tensors(*file_, config_);
    if (!bpw_mode()) {
      report_.target = o_.type;
      report_.allocator = "none";
      return;
    }
    report_.allocator = o_.allocator;
    uint64_t weights = 0, min_bytes = 0;
    for (const auto& ch : base) {
      if (!llama::is_quantizable(ch.role)) continue;
      weights += ch.weights();
      uint64_t lo = std::numeric_limits<uint64_t>::max();
      for (Type t : candidate_types(ch)) lo = std::min(lo, ch.rows() * lowbit::formats::row_bytes(t, ch.cols()));
      min_bytes += lo;
    }
    const auto as_type = lowbit::formats::parse_type(o_.bpw);
    if (as_type) {
      auto uni = base;
      llama::choose_types(uni, detail::parse_writable_type("--bpw", o_.bpw), keep_, tied_);
      for (const auto& ch : uni)
        if (llama::is_quantizable(ch.role)) budget_ += ch.bytes();
      report_.target = "bpw of uniform " + o_.bpw;
    } else {
      double b = 0;
      try {
        size_t pos = 0;
        b = std::stod(o_.bpw, &pos);
        detail::require(pos == o_.bpw.size(), "");
      } catch (...) {
        detail::fail("--bpw: expected bits per weight (e.g. 4.5) or a type name (e.g. Q4_0), got '{}'", o_.bpw);
      }
      detail::require(std::isfinite(b) && b > 0, "--bpw: expected a value > 0, got {}", o_.bpw);
      budget_ = uint64_t(std::floor(b * double(weights) / 8.0));
      report_.target = "bpw " + o_.bpw;
    }
    detail::require(budget_ >= min_bytes,
                    "--bpw {}: the budget ({:.4f} bits/weight, {} bytes for {} quantizable weights) "
                    "is below the smallest allocation the allowed types give ({:.4f} bits/weight, {} "
                    "bytes with --types {}{})",
                    o_.bpw, 8.0 * double(budget_) / double(weights), budget_, weights,
                    8.0 * double(min_bytes) / double(weights), min_bytes, join(o_.types),
                    keep_.empty() ? "" : " and the --keep rules");
    report_.budget_bytes = budget_;
    quantizable_weights_ = weights;
  }

  static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
    return s;
  }

  /// The types a quantizable tensor may get under --bpw: each of --types or its fallback for
  /// the tensor's rows; a --keep rule pins one.
  std::vector<Type> candidate_types(const TensorChoice& ch) const {
    if (const llama::KeepRule* k = llama::find_keep(keep_, ch.name)) return {llama::fitting_type(k->type, ch.cols())};
    std::vector<Type> out;
    for (Type t : types_) {
      const Type u = llama::fitting_type(t, ch.cols());
      if (std::find(out.begin(), out.end(), u) == out.end()) out.push_back(u);
    }
    return out;
  }

  void progress(const std::string& phase, const std::string& tensor, int block, double part) {
    if (!progress_) return;
    Progress p;
    p.phase = phase;
    p.tensor = tensor;
    p.block = block;
    p.blocks = config_.n_layers;
    p.done = std::min(1.0, (done_work_ + part) / total_work_);
    progress_(p);
  }

  // ---- one candidate ----------------------------------------------------------------------------

  RunReport run_candidate(const Transform& tr, const std::string& path) {
    std::vector<TensorChoice> tensors = llama::export_tensors(*file_, config_, tr.rotated && tied_);
    RunReport r = report_;
    if (!bpw_mode()) {
      llama::choose_types(tensors, target_, keep_, tied_ && !tr.rotated);
    } else {
      llama::choose_types(tensors, Type::F32, keep_, tied_ && !tr.rotated);  // norms, copies
      allocate(tensors, tr, r);
      done_work_ += 1.0;
    }
    for (const auto& ch : tensors)
      if (ch.fell_back())
        r.fallbacks.push_back(fmt::format("{}: {} -> {} (rows of {})", ch.name,
                                          lowbit::formats::to_string(ch.wanted),
                                          lowbit::formats::to_string(ch.type), ch.cols()));
    lowbit::io::Metadata extra = {
        {"lowbit.quantize.method", lowbit::io::Value::of_string(o_.method)},
        {"lowbit.quantize.target", lowbit::io::Value::of_string(r.target)},
        {"lowbit.quantize.allocator", lowbit::io::Value::of_string(r.allocator)},
        {"lowbit.quantize.calibration", lowbit::io::Value::of_string(r.calibration)},
        {"lowbit.quantize.calibration_tokens", lowbit::io::Value::of_uint64(uint64_t(text_.fit_tokens))},
        {"lowbit.quantize.rotation", lowbit::io::Value::of_string(tr.rotated ? tr.record.describe() : "none")}};
    if (tr.rotated)
      for (const auto& kv : tr.record.metadata()) extra.push_back(kv);
    lowbit::io::WriteOptions wo;
    wo.inputs = {o_.model};
    if (!bpw_mode()) wo.file_type = uint32_t(lowbit::io::file_type_for(target_));
    lowbit::io::GgufWriter w(path, llama::export_metadata(*file_, extra), llama::export_specs(tensors), wo);
    quantize_pass(tensors, tr, w, r);
    w.finish();
    done_work_ += 1.0;
    r.file_bytes = w.file_size();
    for (const auto& t : r.tensors)
      if (t.quantizable) {
        r.quantized_bytes += t.bytes;
        r.quantized_weights += t.weights;
      }
    return r;
  }

  /// Rewrites the chosen candidate to `out` with the choice recorded in the metadata.
  void finalize_choice(const std::string& chosen, const Transform& tr) {
    const auto src = lowbit::io::GgufFile::open(chosen);
    lowbit::io::Metadata m = lowbit::io::output_metadata(src);
    std::vector<lowbit::io::Value> list;
    for (const auto& c : report_.candidates)
      list.push_back(lowbit::io::Value::of_string(
          fmt::format("{}: validation PPL {:.4f}{}", c.transform, c.val_ppl, c.chosen ? " (chosen)" : "")));
    lowbit::io::set_value(m, "lowbit.quantize.rotation_candidates",
                          lowbit::io::Value::of_array(lowbit::io::ValueType::String, list));
    lowbit::io::set_value(m, "lowbit.quantize.rotation_choice",
                          lowbit::io::Value::of_string(fmt::format(
                              "lowest perplexity on the held-out tail of the calibration half ({} "
                              "predictions)", text_.validation_predictions)));
    (void)tr;
    std::vector<lowbit::io::TensorSpec> specs;
    for (const auto& t : src.tensors()) specs.push_back({t.name, t.ne, t.type});
    lowbit::io::WriteOptions wo;
    wo.inputs = {o_.model, chosen};
    if (const auto* ft = src.find("general.file_type")) wo.file_type = uint32_t(ft->as_int());
    lowbit::io::GgufWriter w(o_.out, m, specs, wo);
    for (const auto& t : src.tensors()) w.write_tensor(t.name, src.raw(t));
    w.finish();
  }

  // ---- allocation (--bpw) -----------------------------------------------------------------------

  /// Pass 1: FP32 statistics of every Linear's input, the distortion of every allowed type per
  /// tensor (measured), then the allocation; sets the types of `tensors`.
  void allocate(std::vector<TensorChoice>& tensors, const Transform& tr, RunReport& r) {
    const lowbit::io::GgufFile& f = *file_;
    const bool measured = o_.allocator == "measured";
    // Fisher weights (second-order loss per unit of output error) where the model fits.
    std::map<std::string, Eigen::VectorXd> fisher;
    uint64_t total_weights = 0;
    for (const auto& t : f.tensors()) total_weights += t.n_elements;
    if (o_.fisher_tokens > 0 && total_weights <= o_.fisher_max_weights) {
      progress("Fisher (backward pass)", "", -1, 0);
      llama::Weights w = llama::load_weights(f, o_.context);
      if (tr.rotated) w = llama::rotate_model(w, tr.options).weights;
      fisher = llama::train::output_fisher(w, text_.fit, o_.fisher_tokens);
      r.distortion = "fisher";
    } else {
      r.distortion = "relative";
    }
    const auto fisher_of = [&](const std::string& name) {
      const std::string key = name.substr(0, name.size() - std::string(".weight").size());
      auto it = fisher.find(key);
      return it == fisher.end() ? Eigen::VectorXd() : it->second;
    };
    struct Item {
      size_t tensor;
      std::vector<Type> types;
      std::vector<double> distortion;
      double alpha = 1, sigma2 = 1;
    };
    std::vector<Item> items;
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < tensors.size(); ++i)
      if (llama::is_quantizable(tensors[i].role)) {
        index[tensors[i].name] = items.size();
        items.push_back({i, candidate_types(tensors[i]), {}, 1, 1});
      }
    // GPTQ's factor of the statistics measured on last (q/k/v and gate/up share theirs); reset
    // with every block, whose statistics may reuse an address.
    const lowbit::ptq::Calibration* factored = nullptr;
    std::optional<lowbit::ptq::GptqFactor> factor;
    const auto measure = [&](const std::string& name, const MatrixXfR& W,
                             const lowbit::ptq::Calibration& calib) {
      Item& it = items[index.at(name)];
      const Eigen::VectorXd fr = fisher_of(name);
      it.alpha = calib.importance().mean() * (fr.size() ? fr.mean() : 1.0);
      it.sigma2 = double((W.array() - W.mean()).square().mean());
      it.distortion.assign(it.types.size(), 0.0);
      if (!measured || it.types.size() == 1) return;
      // Rows measured: all, or measure_rows evenly strided (the sum scaled up).
      const Index stride = std::max<Index>(1, (W.rows() + o_.measure_rows - 1) / o_.measure_rows);
      const Index n = (W.rows() + stride - 1) / stride;
      MatrixXfR sub(n, W.cols());
      Eigen::VectorXd fw;
      if (fr.size()) fw.resize(n);
      for (Index k = 0; k < n; ++k) {
        sub.row(k) = W.row(k * stride);
        if (fr.size()) fw[k] = fr[k * stride];
      }
      const Eigen::MatrixXf G = calib.gram().cast<float>();
      if (o_.method == "gptq" && factored != &calib) {
        factor = lowbit::ptq::gptq_factor(calib);
        factored = &calib;
      }
      const double ref = detail::weighted_output_energy(sub, G, fw);
      for (size_t k = 0; k < it.types.size(); ++k) {
        progress("measuring types", name + " " + lowbit::formats::to_string(it.types[k]), block_, 0);
        const detail::Quantized q = detail::quantize_weight(sub, it.types[k], o_.method == "awq" ? "gamma" : o_.method,
                                                            &calib, factor ? &*factor : nullptr, false);
        const double e = detail::weighted_output_energy(sub - q.deq, G, fw);
        it.distortion[k] = fr.size() ? std::max(0.0, e) * double(W.rows()) / double(n)
                                     : (ref > 0 ? e / ref : 0.0);
      }
    };
    // The FP32 stream over the calibration tokens.
    llama::Packed X = detail::make_packed(text_.fit, config_.dim);
    {
      const auto& t = f.tensor("token_embd.weight");
      const MatrixXfR Erot = embedding(tr, detail::read_rows(f, t, 0, t.rows()));
      detail::embed_rows(text_.fit, Erot, 0, X);
      Item& it = items[index.at("token_embd.weight")];
      it.distortion.assign(it.types.size(), 0.0);
      it.alpha = 1;
      it.sigma2 = double((Erot.array() - Erot.mean()).square().mean());
      const Eigen::VectorXd fe = fisher_of("token_embd.weight");
      if (measured && it.types.size() > 1) {
        // Only the rows of tokens the calibration text holds weigh in (by their counts).
        std::vector<Index> used;
        for (Index v = 0; v < counts_.size(); ++v)
          if (counts_[v] > 0) used.push_back(v);
        MatrixXfR Eu(Index(used.size()), Erot.cols());
        Eigen::VectorXd cu(Index(used.size()));
        for (size_t k = 0; k < used.size(); ++k) {
          Eu.row(Index(k)) = Erot.row(used[k]);
          cu[Index(k)] = counts_[used[k]];
        }
        for (size_t k = 0; k < it.types.size(); ++k) {
          const std::vector<uint8_t> b = detail::quantize_table(Eu, it.types[k], o_.method);
          const MatrixXfR d = Eu - lowbit::formats::decode_matrix(it.types[k], b.data(), Eu.rows(), Eu.cols());
          Eigen::VectorXd rows;
          if (fe.size())
            rows = (d.cast<double>().array().square().rowwise() * fe.transpose().array()).rowwise().sum().matrix();
          else
            rows = d.cast<double>().rowwise().squaredNorm();
          const double e = cu.dot(rows);
          const double ref = cu.dot(Eu.cast<double>().rowwise().squaredNorm());
          it.distortion[k] = fe.size() ? e : (ref > 0 ? e / ref : 0);
        }
      }
    }
    for (int l = 0; l < config_.n_layers; ++l) {
      block_ = l;
      progress("measuring types", "", l, 0.5 * double(l) / config_.n_layers);
      factored = nullptr;
      llama::LayerWeights L = layer(tr, l);
      const std::string p = "blk." + std::to_string(l) + ".";
      lowbit::ptq::Calibration c_qkv(config_.dim), c_o(L.wo.cols()), c_gu(config_.dim), c_down(config_.hidden_dim);
      llama::for_row_chunks(X.x.rows(), 8192, [&](Index r0, Index r1) {
        c_qkv.add(llama::rms_norm_rows(X.x.middleRows(r0, r1 - r0), L.attn_norm, config_.rms_eps));
      });
      MatrixXfR att = llama::attention_input(X.x, L.attn_norm, X.offsets, L.wq, L.wk, L.wv, config_);
      detail::add_rows(c_o, att);
      X.x.noalias() += att * L.wo.transpose();
      att.resize(0, 0);
      llama::for_row_chunks(X.x.rows(), 2048, [&](Index r0, Index r1) {
        const MatrixXfR h2 = llama::rms_norm_rows(X.x.middleRows(r0, r1 - r0), L.ffn_norm, config_.rms_eps);
        c_gu.add(h2);
        const MatrixXfR m = llama::ffn_input(h2, L.w_gate, L.w_up);
        c_down.add(m);
        X.x.middleRows(r0, r1 - r0).noalias() += m * L.w_down.transpose();
      });
      measure(p + "attn_q.weight", L.wq, c_qkv);
      measure(p + "attn_k.weight", L.wk, c_qkv);
      measure(p + "attn_v.weight", L.wv, c_qkv);
      measure(p + "attn_output.weight", L.wo, c_o);
      measure(p + "ffn_gate.weight", L.w_gate, c_gu);
      measure(p + "ffn_up.weight", L.w_up, c_gu);
      measure(p + "ffn_down.weight", L.w_down, c_down);
    }
    block_ = -1;
    factored = nullptr;
    if (index.count("output.weight")) {
      lowbit::ptq::Calibration c_head(config_.dim);
      const Eigen::VectorXf norm = output_norm(tr);
      llama::for_row_chunks(X.x.rows(), 8192, [&](Index r0, Index r1) {
        c_head.add(llama::rms_norm_rows(X.x.middleRows(r0, r1 - r0), norm, config_.rms_eps));
      });
      measure("output.weight", head(tr), c_head);
    }
    // The allocation over the exact bytes of each type.
    std::vector<std::vector<std::pair<size_t, double>>> knap;
    for (const Item& it : items) {
      const TensorChoice& ch = tensors[it.tensor];
      std::vector<std::pair<size_t, double>> v;
      for (size_t k = 0; k < it.types.size(); ++k)
        v.push_back({size_t(ch.rows() * lowbit::formats::row_bytes(it.types[k], ch.cols())),
                     it.distortion[k]});
      knap.push_back(std::move(v));
    }
    std::vector<size_t> choice(items.size(), 0);
    if (measured) {
      const lowbit::mixed::KnapsackSolution s = lowbit::mixed::solve_knapsack(knap, size_t(budget_));
      choice = s.choice;
      r.allocation_exact = s.exact;
      r.allocation_distortion = s.distortion;
    } else {
      choice = closed_form(items.size(), knap, [&](size_t i) {
        const Item& it = items[i];
        return std::make_pair(double(tensors[it.tensor].weights()), it.alpha * it.sigma2);
      });
    }
    uint64_t used = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      TensorChoice& ch = tensors[items[i].tensor];
      ch.type = ch.wanted = items[i].types[choice[i]];
      ch.rule = measured ? "measured allocation" : "closed-form allocation";
      if (const llama::KeepRule* k = llama::find_keep(keep_, ch.name)) {
        ch.wanted = k->type;
        ch.rule = "--keep " + k->text;
      }
      used += knap[i][choice[i]].first;
    }
    detail::require(used <= budget_, "internal: the allocation ({} bytes) exceeds the budget ({})",
                    used, budget_);
  }

  /// The closed-form allocation: b_l = b̄ + ½(log2(α_l σ_l²) − mean) (mixed::continuous_bits)
  /// over each tensor's allowed types, rounded down to a type and repaired by the model
  /// distortion n·α·σ²·2^(−2b) per byte (down while over the budget, up while one fits).
  template <class Info>
  std::vector<size_t> closed_form(size_t L, const std::vector<std::vector<std::pair<size_t, double>>>& knap,
                                  Info info) const {
    std::vector<double> n(L), c(L), lo(L), hi(L);
    std::vector<std::vector<size_t>> order(L);  // candidates by bytes
    std::vector<std::vector<double>> bits(L);
    for (size_t i = 0; i < L; ++i) {
      const auto [ni, ci] = info(i);
      n[i] = ni;
      c[i] = std::max(ci, 1e-300);
      for (size_t k = 0; k < knap[i].size(); ++k) order[i].push_back(k);
      std::sort(order[i].begin(), order[i].end(),
                [&](size_t a, size_t b) { return knap[i][a].first < knap[i][b].first; });
      for (size_t k : order[i]) bits[i].push_back(8.0 * double(knap[i][k].first) / ni);
      lo[i] = bits[i].front();
      hi[i] = bits[i].back();
    }
    const std::vector<double> b = lowbit::mixed::continuous_bits(n, c, lo, hi, 8.0 * double(budget_));
    std::vector<size_t> level(L, 0);
    size_t total = 0;
    for (size_t i = 0; i < L; ++i) {
      while (level[i] + 1 < bits[i].size() && bits[i][level[i] + 1] <= b[i] + 1e-9) ++level[i];
      total += knap[i][order[i][level[i]]].first;
    }
    const auto model = [&](size_t i, size_t lv) { return n[i] * c[i] * std::exp2(-2.0 * bits[i][lv]); };
    const auto price = [&](size_t i, size_t lv) { return knap[i][order[i][lv]].first; };
    while (total > budget_) {
      size_t best = L;
      double rate = std::numeric_limits<double>::infinity();
      for (size_t i = 0; i < L; ++i) {
        if (level[i] == 0) continue;
        const double saved = double(price(i, level[i]) - price(i, level[i] - 1));
        const double r = (model(i, level[i] - 1) - model(i, level[i])) / std::max(saved, 1.0);
        if (r < rate) rate = r, best = i;
      }
      total -= price(best, level[best]) - price(best, level[best] - 1);
      --level[best];
    }
    for (;;) {
      size_t best = L;
      double rate = -1;
      for (size_t i = 0; i < L; ++i) {
        if (level[i] + 1 >= bits[i].size()) continue;
        const size_t extra = price(i, level[i] + 1) - price(i, level[i]);
        if (total + extra > budget_) continue;
        const double r = (model(i, level[i]) - model(i, level[i] + 1)) / double(std::max<size_t>(extra, 1));
        if (r > rate) rate = r, best = i;
      }
      if (best == L) break;
      total += price(best, level[best] + 1) - price(best, level[best]);
      ++level[best];
    }
    std::vector<size_t> out(L);
    for (size_t i = 0; i < L; ++i) out[i] = order[i][level[i]];
    return out;
  }

  // ---- the transform (rotation) -----------------------------------------------------------------

  MatrixXfR embedding(const Transform& tr, MatrixXfR E) const {
    if (tr.rotated) E = lowbit::ptq::rotate_input(E, *tr.q);
    return E;
  }
  llama::LayerWeights layer(const Transform& tr, int l) const {
    llama::LayerWeights L = detail::read_layer(*file_, l);
    if (tr.rotated) {
      llama::fold_layer_norms(L);
      llama::RotationRecord rec;
      llama::rotate_layer(config_, L, l, tr.options, &*tr.q, rec);
    }
    return L;
  }
  Eigen::VectorXf output_norm(const Transform& tr) const {
    Eigen::VectorXf g = detail::read_vector(*file_, "output_norm.weight");
    if (tr.rotated) g.setOnes();
    return g;
  }
  /// Rows [r0, r1) of the head as the transform makes it (a tied head is the embedding).
  MatrixXfR head_rows(const Transform& tr, Index r0, Index r1) const {
    const auto* t = file_->find_tensor("output.weight");
    MatrixXfR H = detail::read_rows(*file_, t ? *t : file_->tensor("token_embd.weight"), r0, r1);
    if (tr.rotated) {
      const Eigen::VectorXf g = detail::read_vector(*file_, "output_norm.weight");
      H = lowbit::ptq::rotate_input(lowbit::ptq::scale_columns(H, g), *tr.q);
    }
    return H;
  }
  MatrixXfR head(const Transform& tr) const { return head_rows(tr, 0, config_.vocab_size); }

  // ---- pass 2: quantize and write, block by block -------------------------------------------------

  void record(RunReport& r, const TensorChoice& ch, double rel, const std::string& method) {
    TensorReport t;
    t.name = ch.name;
    t.ne = ch.ne;
    t.type = lowbit::formats::to_string(ch.type);
    t.wanted = lowbit::formats::to_string(ch.wanted);
    t.rule = ch.rule;
    t.method = method;
    t.bytes = ch.bytes();
    t.weights = ch.weights();
    t.rel_error = rel;
    t.quantizable = llama::is_quantizable(ch.role);
    r.tensors.push_back(std::move(t));
  }

  void quantize_pass(const std::vector<TensorChoice>& tensors, const Transform& tr,
                     lowbit::io::GgufWriter& w, RunReport& r) {
    const lowbit::io::GgufFile& f = *file_;
    const llama::Config& c = config_;
    std::map<std::string, const TensorChoice*> by_name;
    for (const auto& ch : tensors) by_name[ch.name] = &ch;
    const auto type_of = [&](const std::string& name) { return by_name.at(name)->type; };
    const bool seq = !o_.calib_fp32;
    const bool int8_stream = seq && o_.calib_activations == "int8";
    const bool validate = o_.rotate;
    const std::string& method = o_.method;
    const auto method_for = [&](Type t) {
      return is_block(t) ? method : std::string(lowbit::formats::to_string(t));
    };
    // Tensors of other roles first, copied as they are (converted to F32 when plain).
    size_t next = 0;
    for (; next < tensors.size() && tensors[next].role == TensorRole::other; ++next) {
      const TensorChoice& ch = tensors[next];
      const auto& t = f.tensor(ch.name);
      if (ch.type == t.type)
        w.write_tensor(ch.name, f.raw(t));
      else
        w.write_tensor(ch.name, lowbit::formats::quantize_matrix(ch.type, detail::read_rows(f, t, 0, t.rows())));
      record(r, ch, std::numeric_limits<double>::quiet_NaN(), "copied");
    }
    // The embedding, in parts of rows: quantized, written, and the calibration (and validation)
    // streams start from its rows (the quantized ones, or the FP32 ones with --calib-fp32).
    llama::Packed X = detail::make_packed(text_.fit, c.dim);
    llama::Packed V;
    if (validate) V = detail::make_packed(text_.validation, c.dim);
    {
      const TensorChoice& ch = *by_name.at("token_embd.weight");
      const auto& t = f.tensor(ch.name);
      double e = 0, ref = 0;
      progress("quantizing", ch.name, -1, 0);
      llama::for_row_chunks(t.rows(), 4096, [&](Index r0, Index r1) {
        const MatrixXfR E = embedding(tr, detail::read_rows(f, t, r0, r1));
        const std::vector<uint8_t> b = detail::quantize_table(E, ch.type, method);
        w.append(b.data(), b.size());
        const MatrixXfR Eq = lowbit::formats::decode_matrix(ch.type, b.data(), E.rows(), E.cols());
        detail::embed_rows(text_.fit, seq ? Eq : E, r0, X);
        if (validate) detail::embed_rows(text_.validation, Eq, r0, V);
        const Eigen::VectorXd cnt = counts_.segment(r0, r1 - r0);
        e += cnt.dot((E - Eq).cast<double>().rowwise().squaredNorm());
        ref += cnt.dot(E.cast<double>().rowwise().squaredNorm());
      });
      record(r, ch, ref > 0 ? e / ref : 0, is_block(ch.type) && method != "rtn" ? "gamma (weight)" : method_for(ch.type));
    }
    const double per_block = 1.0 / double(c.n_layers + 1);
    for (int l = 0; l < c.n_layers; ++l) {
      block_ = l;
      const std::string p = "blk." + std::to_string(l) + ".";
      const double base = double(l) * per_block;
      progress("quantizing", p + "*", l, base);
      llama::LayerWeights L = layer(tr, l);
      if (method == "awq") awq_fold(L, X, p, type_of);
      // The weights the calibration stream runs on. Sequential: the block as stored, its tensors
      // replaced as they are quantized; with int8 activations S holds them as the engine runs the
      // file (block tensors on lowbit's integer kernels), else L holds the decoded floats. With
      // --calib-fp32: a copy of the FP32 block.
      llama::BlockLinears S;
      S.attn_norm = L.attn_norm;
      S.ffn_norm = L.ffn_norm;
      llama::LayerWeights fp32;
      if (!seq) fp32 = L;
      const auto q = [&](const std::string& name, MatrixXfR& W, std::shared_ptr<const llama::Linear>& stored,
                         const lowbit::ptq::Calibration& cal, const lowbit::ptq::GptqFactor* factor, double part) {
        const TensorChoice& ch = *by_name.at(name);
        progress("quantizing", name, l, base + part * per_block);
        detail::Quantized qz = detail::quantize_weight(W, ch.type, method, &cal, factor);
        w.write_tensor(name, qz.bytes);
        record(r, ch, qz.rel_error, method_for(ch.type));
        if (int8_stream) {
          stored = detail::stored_linear(ch.type, std::move(qz), W.rows(), W.cols());
          W.resize(0, 0);
        } else {
          W = std::move(qz.deq);  // the block as stored
        }
      };
      const auto factor_for = [&](const lowbit::ptq::Calibration& cal,
                                  std::initializer_list<std::string> names) {
        std::optional<lowbit::ptq::GptqFactor> F;
        if (method != "gptq") return F;
        for (const auto& n : names)
          if (is_block(type_of(n))) return std::optional<lowbit::ptq::GptqFactor>(lowbit::ptq::gptq_factor(cal, detail::gptq_opts()));
        return F;
      };
      // The stages, on the stream's weights F (S, or LayerWeights L / fp32).
      const auto stages = [&](const auto& F) {
        // Stage A: the attention input, q/k/v.
        lowbit::ptq::Calibration c_qkv(c.dim);
        llama::for_row_chunks(X.x.rows(), 8192, [&](Index r0, Index r1) {
          c_qkv.add(llama::rms_norm_rows(X.x.middleRows(r0, r1 - r0), L.attn_norm, c.rms_eps));
        });
        w.write_tensor(p + "attn_norm.weight", llama::encode_vector(Type::F32, L.attn_norm));
        record(r, *by_name.at(p + "attn_norm.weight"), std::numeric_limits<double>::quiet_NaN(), "F32");
        {
          const auto fq = factor_for(c_qkv, {p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"});
          q(p + "attn_q.weight", L.wq, S.wq, c_qkv, fq ? &*fq : nullptr, 0.05);
          q(p + "attn_k.weight", L.wk, S.wk, c_qkv, fq ? &*fq : nullptr, 0.10);
          q(p + "attn_v.weight", L.wv, S.wv, c_qkv, fq ? &*fq : nullptr, 0.15);
        }
        // Stage B: the attention output, attn_output.
        MatrixXfR att = llama::attention_input(X.x, F.attn_norm, X.offsets, F.wq, F.wk, F.wv, c);
        lowbit::ptq::Calibration c_o(att.cols());
        detail::add_rows(c_o, att);
        {
          const auto fo = factor_for(c_o, {p + "attn_output.weight"});
          q(p + "attn_output.weight", L.wo, S.wo, c_o, fo ? &*fo : nullptr, 0.3);
        }
        // Stage C: the residual, the FFN input, gate/up.
        llama::for_row_chunks(X.x.rows(), 4096, [&](Index r0, Index r1) {
          llama::add_times(X.x.middleRows(r0, r1 - r0), att.middleRows(r0, r1 - r0), F.wo);
        });
        att.resize(0, 0);
        lowbit::ptq::Calibration c_gu(c.dim);
        llama::for_row_chunks(X.x.rows(), 8192, [&](Index r0, Index r1) {
          c_gu.add(llama::rms_norm_rows(X.x.middleRows(r0, r1 - r0), L.ffn_norm, c.rms_eps));
        });
        w.write_tensor(p + "ffn_norm.weight", llama::encode_vector(Type::F32, L.ffn_norm));
        record(r, *by_name.at(p + "ffn_norm.weight"), std::numeric_limits<double>::quiet_NaN(), "F32");
        {
          const auto fg = factor_for(c_gu, {p + "ffn_gate.weight", p + "ffn_up.weight"});
          q(p + "ffn_gate.weight", L.w_gate, S.w_gate, c_gu, fg ? &*fg : nullptr, 0.45);
          q(p + "ffn_up.weight", L.w_up, S.w_up, c_gu, fg ? &*fg : nullptr, 0.6);
        }
        // Stage D: the ffn_down input (recomputed below rather than kept: it is the widest).
        lowbit::ptq::Calibration c_down(c.hidden_dim);
        llama::for_row_chunks(X.x.rows(), 2048, [&](Index r0, Index r1) {
          const MatrixXfR h2 = llama::rms_norm_rows(X.x.middleRows(r0, r1 - r0), F.ffn_norm, c.rms_eps);
          c_down.add(llama::ffn_input(h2, F.w_gate, F.w_up));
        });
        {
          const auto fd = factor_for(c_down, {p + "ffn_down.weight"});
          q(p + "ffn_down.weight", L.w_down, S.w_down, c_down, fd ? &*fd : nullptr, 0.8);
        }
        // Stage E: the block's output.
        llama::for_row_chunks(X.x.rows(), 2048, [&](Index r0, Index r1) {
          const MatrixXfR h2 = llama::rms_norm_rows(X.x.middleRows(r0, r1 - r0), F.ffn_norm, c.rms_eps);
          llama::add_times(X.x.middleRows(r0, r1 - r0), llama::ffn_input(h2, F.w_gate, F.w_up), F.w_down);
        });
      };
      if (int8_stream)
        stages(S);
      else
        stages(seq ? L : fp32);
      if (validate) {  // the block as stored
        if (int8_stream)
          llama::block_forward(V, S, c);
        else
          llama::block_forward(V, L, c);
      }
    }
    block_ = -1;
    // The head: statistics of the final norm's output, then the head in parts of rows.
    Eigen::VectorXf norm = output_norm(tr);
    lowbit::ptq::Calibration c_head(c.dim);
    llama::for_row_chunks(X.x.rows(), 8192, [&](Index r0, Index r1) {
      c_head.add(llama::rms_norm_rows(X.x.middleRows(r0, r1 - r0), norm, c.rms_eps));
    });
    Eigen::VectorXf head_scale;
    const bool has_head = by_name.count("output.weight") > 0;
    if (method == "awq" && has_head && is_block(type_of("output.weight"))) {
      const MatrixXfR H = head(tr);
      const lowbit::ptq::AwqScales s =
          lowbit::ptq::format_awq_scales({&H}, {type_of("output.weight")}, c_head, awq_options());
      head_scale = s.scale;
      norm = norm.cwiseQuotient(head_scale);
      c_head = c_head.scaled(head_scale.cwiseInverse());
    }
    w.write_tensor("output_norm.weight", llama::encode_vector(Type::F32, norm));
    record(r, *by_name.at("output_norm.weight"), std::numeric_limits<double>::quiet_NaN(), "F32");
    detail::Quantized head_q;  // the head as stored, for the validation logits
    if (has_head) {
      const TensorChoice& ch = *by_name.at("output.weight");
      progress("quantizing", ch.name, -1, double(c.n_layers) * per_block);
      std::optional<lowbit::ptq::GptqFactor> fh;
      if (method == "gptq" && is_block(ch.type)) fh = lowbit::ptq::gptq_factor(c_head, detail::gptq_opts());
      const Eigen::MatrixXf G = c_head.gram().cast<float>();
      double e = 0, ref = 0;
      if (validate) head_q.deq.resize(Index(ch.rows()), Index(ch.cols()));
      llama::for_row_chunks(Index(ch.rows()), 4096, [&](Index r0, Index r1) {
        MatrixXfR H = head_rows(tr, r0, r1);
        if (head_scale.size()) H = H.array().rowwise() * head_scale.transpose().array();
        const detail::Quantized qz = detail::quantize_weight(H, ch.type, method, &c_head, fh ? &*fh : nullptr, false);
        w.append(qz.bytes.data(), qz.bytes.size());
        e += detail::weighted_output_energy(H - qz.deq, G, Eigen::VectorXd());
        ref += detail::weighted_output_energy(H, G, Eigen::VectorXd());
        if (validate) {
          head_q.bytes.insert(head_q.bytes.end(), qz.bytes.begin(), qz.bytes.end());
          head_q.deq.middleRows(r0, r1 - r0) = qz.deq;
        }
      });
      record(r, ch, ref > 0 ? e / ref : 0, method_for(ch.type));
    }
    if (validate) {
      // The held-out tail through the stored model: next-token perplexity.
      double nll = 0;
      long predictions = 0;
      const Eigen::VectorXf vnorm = norm;
      const Type head_type = has_head ? type_of("output.weight") : type_of("token_embd.weight");
      if (!has_head) {
        const auto& t = f.tensor("token_embd.weight");
        // A tied model keeps its table: the head is the stored embedding (quantized again: the
        // same bytes as written).
        head_q.bytes = detail::quantize_table(embedding(tr, detail::read_rows(f, t, 0, t.rows())), head_type, method);
        head_q.deq = lowbit::formats::decode_matrix(head_type, head_q.bytes.data(), t.rows(), t.cols());
      }
      // The head as the stream runs the blocks (as the engine runs the file, or decoded).
      const Index head_rows = head_q.deq.rows(), head_cols = head_q.deq.cols();
      const std::shared_ptr<const llama::Linear> head_linear =
          int8_stream ? detail::stored_linear(head_type, std::move(head_q), head_rows, head_cols)
                      : std::make_shared<llama::Fp32Linear>(std::move(head_q.deq));
      for (Index s = 0; s < V.sequences(); ++s) {
        const Index r0 = V.offsets[size_t(s)], r1 = V.offsets[size_t(s + 1)];
        const MatrixXfR h = llama::rms_norm_rows(V.x.middleRows(r0, r1 - r0), vnorm, c.rms_eps);
        const MatrixXfR logits = llama::times(h, head_linear);
        const auto& ids = text_.validation[size_t(s)];
        for (Index i = 0; i + 1 < logits.rows(); ++i) {
          const auto row = logits.row(i);
          const double mx = row.maxCoeff();
          double sum = 0;
          for (Index j = 0; j < row.size(); ++j) sum += std::exp(double(row(j)) - mx);
          nll += mx + std::log(sum) - double(row(ids[size_t(i + 1)]));
          ++predictions;
        }
      }
      r.val_ppl = std::exp(nll / double(std::max(predictions, 1L)));
    }
  }

  static bool is_block(Type t) { return detail::is_block_format(t); }

  lowbit::ptq::FormatAwqOptions awq_options() const { return {}; }

  /// AWQ: scales from the FP32 block's statistics on the current input X, folded where llama.cpp
  /// applies them (attn_norm for q/k/v, attn_v's rows for attn_output with query heads of a KV
  /// head tied, ffn_norm for gate/up, ffn_up's rows for ffn_down); exact in float.
  template <class TypeOf>
  void awq_fold(llama::LayerWeights& L, const llama::Packed& X, const std::string& p, TypeOf type_of) {
    const llama::Config& c = config_;
    lowbit::ptq::Calibration c_qkv(c.dim), c_o(L.wo.cols()), c_gu(c.dim), c_down(c.hidden_dim);
    llama::Packed Y = X;
    llama::for_row_chunks(Y.x.rows(), 8192, [&](Index r0, Index r1) {
      c_qkv.add(llama::rms_norm_rows(Y.x.middleRows(r0, r1 - r0), L.attn_norm, c.rms_eps));
    });
    MatrixXfR att = llama::attention_input(Y.x, L.attn_norm, Y.offsets, L.wq, L.wk, L.wv, c);
    detail::add_rows(c_o, att);
    Y.x.noalias() += att * L.wo.transpose();
    att.resize(0, 0);
    llama::for_row_chunks(Y.x.rows(), 2048, [&](Index r0, Index r1) {
      const MatrixXfR h2 = llama::rms_norm_rows(Y.x.middleRows(r0, r1 - r0), L.ffn_norm, c.rms_eps);
      c_gu.add(h2);
      c_down.add(llama::ffn_input(h2, L.w_gate, L.w_up));
    });
    const auto opts = awq_options();
    const auto group = [&](std::vector<std::pair<const MatrixXfR*, std::string>> ws,
                           const lowbit::ptq::Calibration& cal, const std::vector<Index>& tie) {
      std::vector<const MatrixXfR*> mats;
      std::vector<Type> types;
      for (const auto& [m, n] : ws)
        if (is_block(type_of(p + n))) {
          mats.push_back(m);
          types.push_back(type_of(p + n));
        }
      if (mats.empty()) return Eigen::VectorXf(Eigen::VectorXf::Ones(cal.features()));
      return lowbit::ptq::format_awq_scales(mats, types, cal, opts, tie).scale;
    };
    // q/k/v: one scale folded into attn_norm.
    const Eigen::VectorXf s_qkv = group({{&L.wq, "attn_q.weight"}, {&L.wk, "attn_k.weight"}, {&L.wv, "attn_v.weight"}}, c_qkv, {});
    L.attn_norm = L.attn_norm.cwiseQuotient(s_qkv);
    for (auto* m : {&L.wq, &L.wk, &L.wv}) *m = m->array().rowwise() * s_qkv.transpose().array();
    // attn_output: features (head h, dim d) of query heads sharing a KV head share a scale,
    // folded into attn_v's row (kv head, d).
    const int g = c.n_heads / c.n_kv_heads;
    std::vector<Index> tie(size_t(L.wo.cols()));
    for (Index k = 0; k < L.wo.cols(); ++k) tie[size_t(k)] = (k / c.head_dim) / g * c.head_dim + k % c.head_dim;
    const Eigen::VectorXf s_o = group({{&L.wo, "attn_output.weight"}}, c_o, tie);
    for (Index k = 0; k < L.wo.cols(); ++k) {
      L.wo.col(k) *= s_o[k];
      (void)0;
    }
    for (Index r = 0; r < L.wv.rows(); ++r) {
      const Index h = r / c.head_dim, d = r % c.head_dim;
      L.wv.row(r) /= s_o[h * g * c.head_dim + d];  // the scale of query head h·g (shared)
    }
    // gate/up: one scale folded into ffn_norm.
    const Eigen::VectorXf s_gu = group({{&L.w_gate, "ffn_gate.weight"}, {&L.w_up, "ffn_up.weight"}}, c_gu, {});
    L.ffn_norm = L.ffn_norm.cwiseQuotient(s_gu);
    for (auto* m : {&L.w_gate, &L.w_up}) *m = m->array().rowwise() * s_gu.transpose().array();
    // ffn_down: folded into ffn_up's rows.
    const Eigen::VectorXf s_d = group({{&L.w_down, "ffn_down.weight"}}, c_down, {});
    L.w_down = L.w_down.array().rowwise() * s_d.transpose().array();
    for (Index r = 0; r < L.w_up.rows(); ++r) L.w_up.row(r) /= s_d[r];
  }

  Options o_;
  ProgressFn progress_;
  std::unique_ptr<lowbit::io::GgufFile> file_;
  llama::Config config_;
  std::unique_ptr<llama::Tokenizer> tok_;
  bool tied_ = false;
  Type target_ = Type::F32;
  std::vector<Type> types_;
  std::vector<llama::KeepRule> keep_;
  uint64_t budget_ = 0, quantizable_weights_ = 0;
  detail::CalibrationText text_;
  Eigen::VectorXd counts_;
  RunReport report_;
  size_t cand_ = 0;
  int block_ = -1;
  double total_work_ = 1, done_work_ = 0;
  int threads_ = 1;

 public:
  /// Threads used (after run()).
  int threads() const { return threads_; }
};

}  // namespace lbq
