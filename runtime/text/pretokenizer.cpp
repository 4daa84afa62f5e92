#define PCRE2_CODE_UNIT_WIDTH 8
#include "runtime/text/pretokenizer.h"

#include <pcre2.h>

#include <stdexcept>

namespace troupe {
namespace {

const char* const k_gpt2 =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const char* const k_llama3 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const k_qwen2 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

}  // namespace

struct pretokenizer::compiled {
  pcre2_code* code = nullptr;
  ~compiled() { pcre2_code_free(code); }
};

std::vector<std::string> pretokenizer::regexes_for(const std::string& pre) {
  if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe" || pre == "falcon3")
    return {k_llama3};
  if (pre == "qwen2" || pre == "deepseek-r1-qwen" || pre == "stablelm2" || pre == "megrez")
    return {k_qwen2};
  if (pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "codeshell")
    return {"\\p{N}", k_gpt2};
  if (pre == "gpt2" || pre == "gpt-2" || pre == "phi-2" || pre == "mpt" || pre == "olmo")
    return {k_gpt2};
  if (pre == "default" || pre.empty())
    return {"[\\p{P}\\$\\+<=>\\^~\\|]+", k_gpt2, "\\p{N}+", "[0-9][0-9][0-9]"};
  return {};
}

pretokenizer::pretokenizer(const std::string& pre) {
  const auto list = regexes_for(pre);
  if (list.empty()) throw std::runtime_error("unsupported pre-tokenizer '" + pre + "'");
  ignore_merges_ = (list.front() == k_llama3);
  for (const auto& re : list) {
    int err = 0;
    PCRE2_SIZE off = 0;
    auto c = std::make_unique<compiled>();
    c->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(re.c_str()), re.size(),
                            PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
    if (!c->code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw std::runtime_error("pre-tokenizer regex for '" + pre + "' does not compile at " +
                               std::to_string(off) + ": " + reinterpret_cast<char*>(msg));
    }
    pcre2_jit_compile(c->code, PCRE2_JIT_COMPLETE);  // optional: falls back to the interpreter
    regexes_.push_back(std::move(c));
  }
}

pretokenizer::~pretokenizer() = default;

std::vector<std::string_view> pretokenizer::split(std::string_view text) const {
  std::vector<std::string_view> pieces{text};
  if (text.empty()) return {};
  for (const auto& re : regexes_) {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(re->code, nullptr);
    if (!md) throw std::runtime_error("pre-tokenizer: out of memory");
    std::vector<std::string_view> next;
    for (auto piece : pieces) {
      size_t start = 0, last = 0;
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
      while (start <= piece.size()) {
        const int rc = pcre2_match(re->code, subject, piece.size(), start, 0, md, nullptr);
        if (rc < 0) {
          if (rc == PCRE2_ERROR_NOMATCH) break;
          pcre2_match_data_free(md);
          throw std::runtime_error("pre-tokenizer regex failed with PCRE2 error " +
                                   std::to_string(rc));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const size_t b = ov[0], e = ov[1];
        if (e == b) {  // empty match: step over one character
          start = b + 1;
          while (start < piece.size() && (static_cast<uint8_t>(piece[start]) & 0xC0) == 0x80) ++start;
          continue;
        }
        if (b > last) next.push_back(piece.substr(last, b - last));
        next.push_back(piece.substr(b, e - b));
        last = start = e;
      }
      if (last < piece.size()) next.push_back(piece.substr(last));
    }
    pcre2_match_data_free(md);
    pieces = std::move(next);
  }
  return pieces;
}

}  // namespace troupe
