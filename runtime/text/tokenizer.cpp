#include "runtime/text/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <queue>
#include <stdexcept>

#include "runtime/text/pretokenizer.h"
#include "runtime/text/utf8.h"

namespace troupe {
namespace {

const char* const k_spm_space = "\xE2\x96\x81";  // "▁"

std::string type_list_error(const char* what, size_t got, size_t want) {
  return std::string("tokenizer: ") + what + " has " + std::to_string(got) + " entries, tokens has " +
         std::to_string(want);
}

/// One symbol of a word being merged: a byte range and its neighbours.
struct symbol {
  size_t start = 0;
  size_t len = 0;  ///< 0 once merged into its left neighbour
  int prev = -1;
  int next = -1;
};

/// A candidate merge of two adjacent symbols.
struct bigram {
  int left = 0;
  int right = 0;
  double key = 0;     ///< lower pops first (bpe: rank; spm: -score)
  size_t len = 0;     ///< combined length when queued, to detect stale entries
};

struct bigram_order {
  bool operator()(const bigram& a, const bigram& b) const {
    return a.key > b.key || (a.key == b.key && a.left > b.left);
  }
};

using bigram_queue = std::priority_queue<bigram, std::vector<bigram>, bigram_order>;

std::vector<symbol> split_chars(std::string_view word) {
  std::vector<symbol> syms;
  for (size_t i = 0; i < word.size();) {
    const size_t n = utf8::char_len(word, i);
    symbol s;
    s.start = i;
    s.len = n;
    s.prev = static_cast<int>(syms.size()) - 1;
    s.next = static_cast<int>(syms.size()) + 1;
    syms.push_back(s);
    i += n;
  }
  if (!syms.empty()) syms.back().next = -1;
  return syms;
}

/// Merges the popped bigram into its left symbol; false when the entry is stale.
bool apply_merge(std::vector<symbol>& syms, const bigram& b) {
  symbol& l = syms[b.left];
  symbol& r = syms[b.right];
  if (l.len == 0 || r.len == 0 || l.next != b.right || l.len + r.len != b.len) return false;
  l.len += r.len;
  r.len = 0;
  l.next = r.next;
  if (r.next >= 0) syms[r.next].prev = b.left;
  return true;
}

/// Merges adjacent symbols best-first until no candidate is left. `try_add(l, r)` pushes
/// the bigram (l, r) onto `q` when it may merge (BPE: by rank, SPM: by score).
template <class TryAdd>
void merge_all(std::vector<symbol>& syms, bigram_queue& q, TryAdd&& try_add) {
  for (size_t i = 1; i < syms.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!q.empty()) {
    const bigram b = q.top();
    q.pop();
    if (!apply_merge(syms, b)) continue;
    try_add(syms[b.left].prev, b.left);
    try_add(b.left, syms[b.left].next);
  }
}

}  // namespace

tokenizer::tokenizer(tokenizer_data d) : data_(std::move(d)) {
  if (data_.types.empty()) data_.types.assign(data_.tokens.size(), token_type::normal);
  validate();
  const auto n = static_cast<int32_t>(data_.tokens.size());
  token_to_id_.reserve(data_.tokens.size());
  for (int32_t i = 0; i < n; ++i)
    if (!data_.tokens[i].empty()) token_to_id_[data_.tokens[i]] = i;
  for (int32_t i = 0; i < n; ++i) {
    const auto t = data_.types[i];
    if ((t == token_type::control || t == token_type::user_defined || t == token_type::unknown) &&
        !data_.tokens[i].empty())
      specials_.push_back(i);
  }
  std::stable_sort(specials_.begin(), specials_.end(), [this](int32_t a, int32_t b) {
    return data_.tokens[a].size() > data_.tokens[b].size();
  });
  eog_.assign(data_.tokens.size(), false);
  for (int32_t id : data_.eog_ids) eog_[id] = true;
  if (data_.eos_id >= 0) eog_[data_.eos_id] = true;
  if (data_.kind == tokenizer_kind::bpe) {
    pre_ = std::make_unique<pretokenizer>(data_.pre);
    byte_known_.resize(256);
    for (int b = 0; b < 256; ++b) byte_known_[b] = find_token(utf8::byte_to_unicode(static_cast<uint8_t>(b))) >= 0;
    merge_ranks_.reserve(data_.merges.size());
    for (size_t i = 0; i < data_.merges.size(); ++i)
      merge_ranks_.emplace(data_.merges[i], static_cast<int>(i));
  } else {
    spm_bytes_.assign(256, -1);
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      spm_bytes_[b] = find_token(buf);
      if (spm_bytes_[b] < 0) spm_bytes_[b] = find_token(std::string(1, static_cast<char>(b)));
    }
  }
}

tokenizer::~tokenizer() = default;
tokenizer::tokenizer(tokenizer&&) noexcept = default;
tokenizer& tokenizer::operator=(tokenizer&&) noexcept = default;

void tokenizer::check_id(int32_t id, const char* what) const {
  if (id < -1 || id >= static_cast<int32_t>(data_.tokens.size()))
    throw std::runtime_error(std::string("tokenizer: ") + what + " " + std::to_string(id) +
                             " is outside the vocabulary of " + std::to_string(data_.tokens.size()));
}

void tokenizer::validate() const {
  const size_t n = data_.tokens.size();
  if (n == 0) throw std::runtime_error("tokenizer: the vocabulary has no tokens");
  if (n > 0x7FFFFFFF) throw std::runtime_error("tokenizer: the vocabulary is too large");
  if (data_.types.size() != n) throw std::runtime_error(type_list_error("types", data_.types.size(), n));
  if (data_.kind == tokenizer_kind::spm && data_.scores.size() != n)
    throw std::runtime_error(type_list_error("scores (required for spm)", data_.scores.size(), n));
  if (!data_.scores.empty() && data_.scores.size() != n)
    throw std::runtime_error(type_list_error("scores", data_.scores.size(), n));
  check_id(data_.bos_id, "bos_id");
  check_id(data_.eos_id, "eos_id");
  check_id(data_.unk_id, "unk_id");
  check_id(data_.pad_id, "pad_id");
  for (int32_t id : data_.eog_ids) {
    if (id < 0) throw std::runtime_error("tokenizer: eog id " + std::to_string(id) + " is negative");
    check_id(id, "eog id");
  }
  if (data_.add_bos && data_.bos_id < 0)
    throw std::runtime_error("tokenizer: add_bos is set but there is no bos_id");
  if (data_.add_eos && data_.eos_id < 0)
    throw std::runtime_error("tokenizer: add_eos is set but there is no eos_id");
  if (data_.kind == tokenizer_kind::bpe) {
    for (size_t i = 0; i < data_.merges.size(); ++i) {
      const auto& m = data_.merges[i];
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos || sp + 1 >= m.size())
        throw std::runtime_error("tokenizer: merge " + std::to_string(i) + " ('" + m +
                                 "') is not of the form 'left right'");
    }
    if (pretokenizer::regexes_for(data_.pre).empty())
      throw std::runtime_error("tokenizer: unsupported pre-tokenizer '" + data_.pre + "'");
  } else if (data_.kind != tokenizer_kind::spm) {
    throw std::runtime_error("tokenizer: unknown tokenizer kind " +
                             std::to_string(static_cast<int>(data_.kind)));
  }
}

int32_t tokenizer::find_token(std::string_view text) const {
  auto it = token_to_id_.find(std::string(text));
  return it == token_to_id_.end() ? -1 : it->second;
}

bool tokenizer::is_eog(int32_t id) const {
  return id >= 0 && id < vocab_size() && eog_[id];
}

bool tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && data_.types[id] == token_type::control;
}

std::vector<tokenizer::fragment> tokenizer::partition(std::string_view text, bool parse_special) const {
  std::vector<fragment> frags{{text, -1}};
  for (int32_t id : specials_) {
    const auto t = data_.types[id];
    if (!parse_special && (t == token_type::control || t == token_type::unknown)) continue;
    const std::string& s = data_.tokens[id];
    std::vector<fragment> next;
    for (const auto& f : frags) {
      if (f.id >= 0) {
        next.push_back(f);
        continue;
      }
      size_t pos = 0;
      for (size_t hit; (hit = f.text.find(s, pos)) != std::string_view::npos; pos = hit + s.size()) {
        if (hit > pos) next.push_back({f.text.substr(pos, hit - pos), -1});
        next.push_back({{}, id});
      }
      if (pos < f.text.size()) next.push_back({f.text.substr(pos), -1});
    }
    frags = std::move(next);
  }
  return frags;
}

std::vector<int32_t> tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  std::vector<int32_t> out;
  if (add_special && data_.add_bos) out.push_back(data_.bos_id);
  bool prev_special = true;  // spm: the first text fragment gets the space prefix
  for (const auto& f : partition(text, parse_special)) {
    if (f.id >= 0) {
      out.push_back(f.id);
      prev_special = true;
      continue;
    }
    if (data_.kind == tokenizer_kind::bpe) {
      encode_bpe(f.text, out);
    } else {
      std::string s;
      if (data_.add_space_prefix && prev_special) s = " ";
      s.append(f.text);
      encode_spm(s, out);
    }
    prev_special = false;
  }
  if (add_special && data_.add_eos) out.push_back(data_.eos_id);
  return out;
}

int tokenizer::merge_rank(std::string_view left, std::string_view right) const {
  std::string key;
  key.reserve(left.size() + right.size() + 1);
  key.append(left).append(" ").append(right);
  auto it = merge_ranks_.find(key);
  return it == merge_ranks_.end() ? -1 : it->second;
}

void tokenizer::encode_bpe(std::string_view text, std::vector<int32_t>& out) const {
  for (auto piece : pre_->split(text)) {
    std::string word;
    word.reserve(piece.size() * 2);
    for (char c : piece) {
      const auto b = static_cast<uint8_t>(c);
      if (byte_known_[b]) {
        word += utf8::byte_to_unicode(b);
      } else {  // no token for this byte (e.g. 0xFF in a vocab trained on valid UTF-8)
        for (uint8_t r : {0xEF, 0xBF, 0xBD}) word += utf8::byte_to_unicode(r);
      }
    }
    bpe_word(word, out);
  }
}

void tokenizer::bpe_word(const std::string& word, std::vector<int32_t>& out) const {
  if (pre_->ignore_merges()) {
    const int32_t id = find_token(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  std::string_view w(word);
  auto syms = split_chars(w);
  bigram_queue q;
  auto try_add = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    const int rank = merge_rank(w.substr(syms[l].start, syms[l].len), w.substr(syms[r].start, syms[r].len));
    if (rank >= 0) q.push({l, r, static_cast<double>(rank), syms[l].len + syms[r].len});
  };
  merge_all(syms, q, try_add);
  for (int i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) {
    const auto text = w.substr(syms[i].start, syms[i].len);
    const int32_t id = find_token(text);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    for (size_t k = 0; k < text.size();) {  // not in the vocabulary: one token per character
      const size_t n = utf8::char_len(text, k);
      const int32_t cid = find_token(text.substr(k, n));
      if (cid >= 0) out.push_back(cid);
      else if (data_.unk_id >= 0) out.push_back(data_.unk_id);
      k += n;
    }
  }
}

int32_t tokenizer::spm_byte_token(uint8_t b) const {
  return spm_bytes_[b] >= 0 ? spm_bytes_[b] : data_.unk_id;
}

void tokenizer::encode_spm(std::string_view raw, std::vector<int32_t>& out) const {
  std::string text;
  text.reserve(raw.size() + 8);
  for (char c : raw) {
    if (c == ' ') text += k_spm_space;
    else text += c;
  }
  std::string_view w(text);
  auto syms = split_chars(w);
  bigram_queue q;
  auto try_add = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    const auto s = w.substr(syms[l].start, syms[l].len + syms[r].len);
    const int32_t id = find_token(s);
    if (id < 0) return;
    q.push({l, r, -static_cast<double>(data_.scores[id]), s.size()});
  };
  merge_all(syms, q, try_add);
  // Merges only form vocabulary tokens, so a final symbol that is not a token is a
  // single character: it falls back to byte tokens (or unk).
  for (int i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) {
    const auto s = w.substr(syms[i].start, syms[i].len);
    const int32_t id = find_token(s);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    for (char c : s) {
      const int32_t bid = spm_byte_token(static_cast<uint8_t>(c));
      if (bid >= 0) out.push_back(bid);
    }
  }
}

std::string tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw std::out_of_range("tokenizer: token id " + std::to_string(id) + " is outside the vocabulary of " +
                            std::to_string(vocab_size()));
  const std::string& text = data_.tokens[id];
  const auto t = data_.types[id];
  if (t == token_type::control || t == token_type::user_defined) return text;
  std::string out;
  if (data_.kind == tokenizer_kind::spm) {
    if (t == token_type::byte && text.size() == 6 && text.compare(0, 3, "<0x") == 0) {
      out += static_cast<char>(std::stoi(text.substr(3, 2), nullptr, 16));
      return out;
    }
    for (size_t i = 0; i < text.size();) {
      if (text.compare(i, 3, k_spm_space) == 0) {
        out += ' ';
        i += 3;
      } else {
        out += text[i++];
      }
    }
    return out;
  }
  std::string_view sv(text);
  for (size_t i = 0; i < sv.size();) {
    const size_t start = i;
    const uint32_t cp = utf8::next_code_point(sv, i);
    const int b = utf8::unicode_to_byte(cp);
    if (b >= 0) out += static_cast<char>(b);
    else out.append(sv.substr(start, i - start));  // not a byte-level character: keep it
  }
  return out;
}

std::string tokenizer::decode(const std::vector<int32_t>& ids, bool include_special) const {
  incremental_decoder dec(*this, include_special);
  std::string out;
  for (int32_t id : ids) out += dec.push(id);
  out += dec.flush();
  return out;
}

incremental_decoder::incremental_decoder(const tokenizer& t, bool include_special)
    : tok_(&t), include_special_(include_special) {}

std::string incremental_decoder::push(int32_t id) {
  if (!include_special_ && tok_->is_special(id)) return {};
  // Embedding rows past the tokenizer's vocabulary (padding, as Qwen2.5's 152064 rows for
  // 151665 tokens) have no text: a model that samples one prints nothing for it.
  if (id >= tok_->vocab_size()) return {};
  std::string piece = tok_->token_bytes(id);
  if (piece.empty()) return {};
  if (first_) {
    first_ = false;
    const auto& d = tok_->data();
    if (d.kind == tokenizer_kind::spm && d.add_space_prefix && piece[0] == ' ') piece.erase(0, 1);
  }
  pending_ += piece;
  std::string out;
  const size_t used = utf8::sanitize(pending_, false, out);
  pending_.erase(0, used);
  return out;
}

std::string incremental_decoder::flush() {
  std::string out;
  utf8::sanitize(pending_, true, out);
  pending_.clear();
  first_ = true;
  return out;
}

}  // namespace troupe
