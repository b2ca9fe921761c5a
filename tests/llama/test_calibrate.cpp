// test_calibrate.cpp: calibration capture over chunks against activations computed by hand.
#include "../../examples/llama/calibrate.hpp"

#include <catch2/catch.hpp>

#include <random>

namespace {

llama::Weights tiny_weights() {
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0.0f, 0.5f);
  const auto mat = [&](int r, int c) {
    lowbit::MatrixXfR m(r, c);
    for (long i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
    return m;
  };
  llama::Weights w;
  w.config = {8, 12, 2, 2, 1, 4, 8, 16};
  w.token_embd = mat(8, 8);
  w.output = mat(8, 8);
  w.output_norm = Eigen::VectorXf::Ones(8);
  for (int l = 0; l < 2; ++l) {
    llama::LayerWeights L{mat(8, 8), mat(4, 8), mat(4, 8), mat(8, 8), mat(12, 8), mat(8, 12), mat(12, 8),
                          Eigen::VectorXf::Constant(8, 2.0f), Eigen::VectorXf::Ones(8)};
    w.layers.push_back(L);
  }
  w.config.rope_dim = 4;
  return w;
}

}  // namespace

TEST_CASE("calibrate: statistics of every Linear input over the calibration chunks") {
  const llama::Weights w = tiny_weights();
  llama::Model model(w);
  // Pieces: ▁ and letters a..e; "ab" and "▁a" merge.
  llama::Tokenizer tok({"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "c", "\xe2\x96\x81" "a"},
                       {0, 0, 0, 0, 0, 0, 0, -1.0f}, 1, 2, 0);
  const std::vector<std::string> chunks = {"abc", "cab a", "bbbbbbbbbbbbbbbbbbbbbbbbbb"};
  const auto set = llama::collect_calibration(model, tok, chunks, 16, 12);
  // "abc" -> [BOS ▁a b c] (4 tokens), "cab a" -> [BOS ▁ c a b ▁a] (6): 10 < 12, so the third chunk
  // (truncated to 16) is used too: 26 tokens.
  REQUIRE(set.size() == 1 + 2 * 4);
  for (const auto& [key, calib] : set) CHECK(calib.tokens() == 26);
  CHECK(set.count({-1, "output"}) == 1);
  CHECK(set.count({1, "ffn_down"}) == 1);
  CHECK(set.at({0, "ffn_down"}).features() == 12);
  // Layer 0's attention input is RMSNorm(embedding) * 2 of the tokens: check the Gram matrix.
  std::vector<int> ids;
  for (const auto& c : chunks) {
    const auto t = llama::chunk_tokens(tok, c, 16);
    ids.insert(ids.end(), t.begin(), t.end());
  }
  REQUIRE(ids.size() == 26);
  Eigen::MatrixXd gram = Eigen::MatrixXd::Zero(8, 8);
  for (int id : ids) {
    Eigen::VectorXd x = w.token_embd.row(id).transpose().cast<double>();
    x *= 2.0 / std::sqrt(x.squaredNorm() / 8.0 + 1e-5);
    gram += x * x.transpose();
  }
  CHECK((set.at({0, "attn_q"}).gram() - gram).cwiseAbs().maxCoeff() < 1e-4 * gram.cwiseAbs().maxCoeff());
  // The hook is removed afterwards and the cache is reset.
  CHECK(model.n_past() == 0);
  CHECK_THROWS_AS(llama::collect_calibration(model, tok, {}, 16, 10), lowbit::Error);
  CHECK_THROWS_AS(llama::collect_calibration(model, tok, chunks, 16, 0), lowbit::Error);
  CHECK_THROWS_AS(llama::input_name(7), lowbit::Error);
  CHECK(llama::input_name(6) == "ffn_gate");
}
