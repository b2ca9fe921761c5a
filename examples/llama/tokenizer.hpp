// tokenizer.hpp: SentencePiece-style BPE tokenizer (byte fallback) from GGUF tokenizer metadata.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/io/gguf.hpp>

#include <cstdint>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

namespace llama {

/// The `tokenizer.ggml.model = llama` tokenizer: text gets a leading space, spaces become U+2581,
/// UTF-8 characters are merged pairwise (highest-scoring piece first, leftmost on ties) while the
/// merged piece is in the vocabulary; characters without a piece fall back to <0xXX> byte pieces.
class Tokenizer {
 public:
  Tokenizer() = default;

  /// From parallel arrays of pieces and scores; ids of BOS / EOS / UNK.
  Tokenizer(std::vector<std::string> pieces, std::vector<float> scores, int bos, int eos, int unk,
            bool add_space_prefix = true)
      : pieces_(std::move(pieces)), scores_(std::move(scores)), bos_(bos), eos_(eos), unk_(unk),
        add_space_prefix_(add_space_prefix) {
    const int n = vocab_size();
    lowbit::detail::require(n > 0, "pieces: expected a non-empty vocabulary");
    lowbit::detail::require(scores_.size() == pieces_.size(),
                            "scores: expected {} entries (one per piece), got {}", n, scores_.size());
    for (int id : {bos_, eos_, unk_})
      lowbit::detail::require(id >= 0 && id < n, "special token id {} is outside the vocabulary of {}",
                              id, n);
    for (int i = 0; i < n; ++i) index_.emplace(pieces_[size_t(i)], i);  // first id wins on duplicates
    byte_ids_.assign(256, -1);
    for (int b = 0; b < 256; ++b) {
      static const char* hex = "0123456789ABCDEF";
      const std::string p = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
      const auto it = index_.find(p);
      if (it != index_.end()) {
        byte_ids_[size_t(b)] = it->second;
        is_byte_[it->second] = uint8_t(b);
      }
    }
  }

  /// From GGUF metadata (tokenizer.ggml.model must be "llama").
  static Tokenizer from_gguf(const lowbit::io::GgufFile& f) {
    const std::string model = f.get_string("tokenizer.ggml.model", "");
    lowbit::detail::require(model == "llama",
                            "gguf: tokenizer.ggml.model: expected 'llama' (SentencePiece BPE), got '{}'",
                            model);
    const auto& tokens = f.at("tokenizer.ggml.tokens").as_array();
    std::vector<std::string> pieces;
    pieces.reserve(tokens.size());
    for (const auto& t : tokens) pieces.push_back(t.as_string());
    std::vector<float> scores(pieces.size(), 0.0f);
    if (const auto* s = f.find("tokenizer.ggml.scores")) {
      const auto& a = s->as_array();
      lowbit::detail::require(a.size() == pieces.size(),
                              "gguf: tokenizer.ggml.scores has {} entries for {} tokens", a.size(),
                              pieces.size());
      for (size_t i = 0; i < a.size(); ++i) scores[i] = float(a[i].as_float());
    }
    const auto id = [&](const char* key, int64_t fallback) {
      const int64_t v = f.get_int(key, fallback);
      lowbit::detail::require(v >= 0 && v < int64_t(pieces.size()), "gguf: {} = {} is outside the "
                              "vocabulary of {}", key, v, pieces.size());
      return int(v);
    };
    const int bos = id("tokenizer.ggml.bos_token_id", 1), eos = id("tokenizer.ggml.eos_token_id", 2);
    const int unk = id("tokenizer.ggml.unknown_token_id", 0);
    bool prefix = true;
    if (const auto* v = f.find("tokenizer.ggml.add_space_prefix")) prefix = v->as_bool();
    return Tokenizer(std::move(pieces), std::move(scores), bos, eos, unk, prefix);
  }

  int vocab_size() const { return int(pieces_.size()); }
  int bos_id() const { return bos_; }
  int eos_id() const { return eos_; }
  int unk_id() const { return unk_; }
  /// The stored piece of `id` (with U+2581 for spaces, "<0xAB>" for byte pieces).
  const std::string& piece(int id) const {
    lowbit::detail::require(id >= 0 && id < vocab_size(), "id: expected 0..{}, got {}",
                            vocab_size() - 1, id);
    return pieces_[size_t(id)];
  }

  /// Token ids of `text`, with BOS first when `add_bos`.
  std::vector<int> encode(const std::string& text, bool add_bos = false) const {
    std::vector<int> out;
    if (add_bos) out.push_back(bos_);
    if (text.empty()) return out;
    std::string s;
    s.reserve(text.size() * 3 + 3);
    if (add_space_prefix_) s += kSpace;
    for (char ch : text) {
      if (ch == ' ') s += kSpace; else s += ch;
    }
    // Symbols: one per UTF-8 character, in a doubly linked list.
    struct Sym { size_t start, len; int prev, next; };
    std::vector<Sym> sym;
    for (size_t i = 0; i < s.size();) {
      const size_t n = std::min(utf8_len(uint8_t(s[i])), s.size() - i);
      sym.push_back({i, n, int(sym.size()) - 1, int(sym.size()) + 1});
      i += n;
    }
    sym.back().next = -1;
    struct Pair { int left, right; float score; size_t len; };
    const auto worse = [](const Pair& a, const Pair& b) {  // max score first, then leftmost
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    };
    std::priority_queue<Pair, std::vector<Pair>, decltype(worse)> queue(worse);
    const auto try_pair = [&](int l, int r) {
      if (l < 0 || r < 0) return;
      const auto it = index_.find(s.substr(sym[size_t(l)].start, sym[size_t(l)].len + sym[size_t(r)].len));
      if (it != index_.end()) queue.push({l, r, scores_[size_t(it->second)], sym[size_t(l)].len + sym[size_t(r)].len});
    };
    for (size_t i = 1; i < sym.size(); ++i) try_pair(int(i) - 1, int(i));
    while (!queue.empty()) {
      const Pair p = queue.top();
      queue.pop();
      Sym& l = sym[size_t(p.left)];
      Sym& r = sym[size_t(p.right)];
      if (l.len == 0 || r.len == 0 || l.len + r.len != p.len || l.next != p.right) continue;  // stale
      l.len += r.len;
      r.len = 0;
      l.next = r.next;
      if (r.next >= 0) sym[size_t(r.next)].prev = p.left;
      try_pair(l.prev, p.left);
      try_pair(p.left, l.next);
    }
    for (int i = 0; i >= 0 && !sym.empty(); i = sym[size_t(i)].next) {
      const std::string piece = s.substr(sym[size_t(i)].start, sym[size_t(i)].len);
      const auto it = index_.find(piece);
      if (it != index_.end()) {
        out.push_back(it->second);
        continue;
      }
      for (unsigned char b : piece) out.push_back(byte_ids_[b] >= 0 ? byte_ids_[b] : unk_);
    }
    return out;
  }

  /// Text of `ids`: byte pieces become their bytes, U+2581 a space; BOS/EOS are skipped and the
  /// leading space the encoder added is removed.
  std::string decode(const std::vector<int>& ids) const {
    std::string out;
    bool first = true;
    for (int id : ids) {
      const std::string& p = piece(id);
      if (id == bos_ || id == eos_) continue;
      std::string text;
      const auto b = is_byte_.find(id);
      if (b != is_byte_.end()) {
        text = std::string(1, char(b->second));
      } else {
        for (size_t i = 0; i < p.size();) {
          if (p.compare(i, 3, kSpace) == 0) { text += ' '; i += 3; } else { text += p[i++]; }
        }
      }
      if (first && add_space_prefix_ && !text.empty() && text[0] == ' ') text.erase(0, 1);
      first = false;
      out += text;
    }
    return out;
  }

 private:
  static constexpr const char* kSpace = "\xe2\x96\x81";  // U+2581, SentencePiece's space mark
  static size_t utf8_len(uint8_t c) {
    return c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 1;
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int> index_;
  std::vector<int> byte_ids_;
  std::unordered_map<int, uint8_t> is_byte_;
  int bos_ = 1, eos_ = 2, unk_ = 0;
  bool add_space_prefix_ = true;
};

/// Opens `gguf_path` and loads its tokenizer.
inline Tokenizer load_tokenizer(const std::string& gguf_path) {
  return Tokenizer::from_gguf(lowbit::io::GgufFile::open(gguf_path));
}

}  // namespace llama
