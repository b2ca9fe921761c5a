// test_tokenizer.cpp: the llama tokenizer against the models README goldens and hand-built vocabularies.
#include "../../examples/llama/tokenizer.hpp"
#include "../support.hpp"

#include <catch2/catch.hpp>

#include <fstream>

namespace {

using lowbit::test::stories_model;
using lowbit::test::have;

}  // namespace

TEST_CASE("tokenizer: stories260K goldens from the models README") {
  if (!have(stories_model())) {
    WARN("SKIPPED: " << stories_model() << " is absent (needs ../shared beside the project)");
    return;
  }
  const auto tok = llama::load_tokenizer(stories_model());
  CHECK(tok.vocab_size() == 512);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  CHECK(tok.encode("Once upon a time") == std::vector<int>{403, 407, 261, 378});
  CHECK(tok.encode("Once upon a time", true) == std::vector<int>{1, 403, 407, 261, 378});
  CHECK(tok.decode({1, 403, 407, 261, 378}) == "Once upon a time");
  // Byte fallback: 'œ' (U+0153) has no piece, so it becomes its two UTF-8 bytes <0xC5><0x93>.
  const auto ids = tok.encode("\xc5\x93");
  REQUIRE(ids.size() == 3);
  CHECK(tok.piece(ids[0]) == "\xe2\x96\x81");  // the leading space
  CHECK(ids[1] == 3 + 0xC5);
  CHECK(ids[2] == 3 + 0x93);
  CHECK(tok.decode(ids) == "\xc5\x93");
  const std::string text = "Lily saw a big, red ball.\nShe said \"hi\"  twice!";
  CHECK(tok.decode(tok.encode(text, true)) == text);
  CHECK(tok.encode("").empty());
  CHECK(tok.encode("", true) == std::vector<int>{1});
}

TEST_CASE("tokenizer: merges pick the highest score, leftmost on ties") {
  // pieces: 0 unk, 1 bos, 2 eos, then chars and merges with scores chosen by hand.
  std::vector<std::string> p = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "ab", "ba",
                                "\xe2\x96\x81" "a", "aba"};
  std::vector<float> s = {0, 0, 0, 0, 0, 0, -1, -0.5f, -3, -0.1f};
  llama::Tokenizer tok(p, s, 1, 2, 0);
  // " aba": ▁ a b a. Pairs: ▁a(-3), ab(-1), ba(-0.5) -> ba first: ▁ a ba; then ▁a(-3), a+ba=aba(-0.1)
  // -> ▁ aba; ▁aba not in vocab. Result ▁, aba.
  CHECK(tok.encode("aba") == std::vector<int>{3, 9});
  // Ties go left: "abab" without prefix: ab(-1) ba(-0.5) ab(-1): ba first -> a ba b; aba(-0.1) ->
  // aba b.
  llama::Tokenizer nopre(p, s, 1, 2, 0, false);
  CHECK(nopre.encode("abab") == std::vector<int>{9, 5});
  CHECK(nopre.encode("bb") == std::vector<int>{5, 5});
  // 'c' has no piece and there are no byte pieces: unk.
  CHECK(nopre.encode("c") == std::vector<int>{0});
  CHECK_THROWS_AS(llama::Tokenizer(p, {0.f}, 1, 2, 0), lowbit::Error);
  CHECK_THROWS_AS(llama::Tokenizer(p, s, 10, 2, 0), lowbit::Error);
  CHECK_THROWS_AS(llama::Tokenizer({}, {}, 0, 0, 0), lowbit::Error);
  CHECK_THROWS_AS(tok.piece(10), lowbit::Error);
  CHECK_THROWS_AS(tok.decode({-1}), lowbit::Error);
}
