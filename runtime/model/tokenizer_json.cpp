#include "runtime/model/tokenizer_json.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <unordered_map>

#include "runtime/model/model_loader.h"

namespace troupe {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const char* const k_llama3_regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const k_qwen2_regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

[[noreturn]] void fail(const fs::path& file, const std::string& key, const std::string& what) {
  throw load_error(file.string() + ": " + (key.empty() ? "" : "key '" + key + "': ") + what);
}

/// `obj[key]` as a string: `def` when `obj` is not an object or the key is absent or null;
/// load_error naming `path`.`key` when it holds another type.
std::string string_at(const json& obj, const char* key, const std::string& def, const fs::path& file,
                      const std::string& path) {
  if (!obj.is_object() || !obj.contains(key) || obj[key].is_null()) return def;
  if (!obj[key].is_string()) fail(file, path + "." + key, "must be a string, got " + std::string(obj[key].type_name()));
  return obj[key].get<std::string>();
}

/// `obj[key]` as a bool, like string_at.
bool bool_at(const json& obj, const char* key, bool def, const fs::path& file, const std::string& path) {
  if (!obj.is_object() || !obj.contains(key) || obj[key].is_null()) return def;
  if (!obj[key].is_boolean()) fail(file, path + "." + key, "must be true or false, got " + std::string(obj[key].type_name()));
  return obj[key].get<bool>();
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) fail(p, "", "cannot be opened");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json read_json(const fs::path& p) {
  try {
    return json::parse(read_text(p));
  } catch (const json::exception& e) {
    fail(p, "", std::string("is not valid JSON: ") + e.what());
  }
}

/// A token given as "text" or {"content": "text"}; empty when absent or null.
std::string token_text(const json& cfg, const char* key, const fs::path& file) {
  if (!cfg.contains(key) || cfg[key].is_null()) return {};
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  fail(file, key, "must be a string or an object with a string 'content'");
}

/// The GGUF pre name for a byte-level pre_tokenizer.
std::string detect_pre(const json& pre, const fs::path& file) {
  if (pre.is_null()) fail(file, "pre_tokenizer", "is null: unsupported tokenizer.json (byte-level BPE needs a pre_tokenizer)");
  const std::string type = string_at(pre, "type", "", file, "pre_tokenizer");
  if (type == "ByteLevel") {
    if (bool_at(pre, "use_regex", true, file, "pre_tokenizer")) return "gpt2";
    fail(file, "pre_tokenizer", "ByteLevel without use_regex is not supported");
  }
  if (type == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].is_array()) {
    const json& list = pre["pretokenizers"];
    const std::string p0 = "pre_tokenizer.pretokenizers[0]", p1 = "pre_tokenizer.pretokenizers[1]";
    if (list.size() == 2 && string_at(list[0], "type", "", file, p0) == "Digits" &&
        bool_at(list[0], "individual_digits", false, file, p0) && string_at(list[1], "type", "", file, p1) == "ByteLevel" &&
        bool_at(list[1], "use_regex", true, file, p1))
      return "smollm";
    if (list.size() == 2 && string_at(list[0], "type", "", file, p0) == "Split" &&
        string_at(list[1], "type", "", file, p1) == "ByteLevel" && list[0].contains("pattern") &&
        list[0]["pattern"].is_object()) {
      const std::string re = string_at(list[0]["pattern"], "Regex", "", file, p0 + ".pattern");
      if (re == k_llama3_regex) return "llama-bpe";
      if (re == k_qwen2_regex) return "qwen2";
      fail(file, "pre_tokenizer.pretokenizers[0].pattern.Regex", "unsupported split regex: " + re);
    }
  }
  fail(file, "pre_tokenizer", "unsupported pre_tokenizer: " + pre.dump());
}

/// True for Llama-2-style BPE: byte fallback, spaces as "▁" through the normalizer or Metaspace.
bool is_spm_like(const json& j, bool& add_prefix, const fs::path& file) {
  const json& model = j["model"];
  if (!bool_at(model, "byte_fallback", false, file, "model")) return false;
  const std::string text = j.contains("normalizer") ? j["normalizer"].dump() : "";
  const std::string pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"].dump() : "";
  const bool metaspace = pre.find("\"Metaspace\"") != std::string::npos;
  const bool replace = text.find("\"Replace\"") != std::string::npos && text.find("\xE2\x96\x81") != std::string::npos;
  add_prefix = text.find("\"Prepend\"") != std::string::npos ||
               (metaspace && (pre.find("\"first\"") != std::string::npos || pre.find("\"always\"") != std::string::npos ||
                              pre.find("\"add_prefix_space\":true") != std::string::npos));
  return metaspace || replace;
}

std::vector<std::string> read_merges(const json& model, const fs::path& file) {
  std::vector<std::string> merges;
  if (!model.contains("merges")) return merges;
  if (!model["merges"].is_array()) fail(file, "model.merges", "must be an array");
  for (const auto& m : model["merges"]) {
    if (m.is_string()) {
      merges.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    } else {
      fail(file, "model.merges", "entry " + std::to_string(merges.size()) + " is neither \"a b\" nor [a, b]");
    }
  }
  return merges;
}

void read_vocab(const json& j, const fs::path& file, tokenizer_data& d) {
  const json& model = j["model"];
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail(file, "model.vocab", "must be an object of token -> id");
  const json& vocab = model["vocab"];
  std::map<int64_t, std::pair<std::string, token_type>> by_id;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0)
      fail(file, "model.vocab", "token '" + it.key() + "' has no non-negative integer id");
    by_id[it.value().get<int64_t>()] = {it.key(), token_type::normal};
  }
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    if (!j["added_tokens"].is_array()) fail(file, "added_tokens", "must be an array");
    for (const auto& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || a["id"].get<int64_t>() < 0 ||
          !a.contains("content") || !a["content"].is_string())
        fail(file, "added_tokens", "entry without an integer 'id' and a string 'content': " + a.dump());
      by_id[a["id"].get<int64_t>()] = {a["content"].get<std::string>(),
                                       bool_at(a, "special", false, file, "added_tokens[]") ? token_type::control
                                                                                           : token_type::user_defined};
    }
  }
  if (by_id.empty()) fail(file, "model.vocab", "is empty");
  const int64_t n = by_id.rbegin()->first + 1;
  if (n > 16 * 1024 * 1024) fail(file, "model.vocab", "ids go up to " + std::to_string(n - 1) + ", too large");
  d.tokens.assign(static_cast<size_t>(n), {});
  d.types.assign(static_cast<size_t>(n), token_type::unused);
  for (int64_t i = 0; i < n; ++i) d.tokens[i] = "[PAD" + std::to_string(i) + "]";
  for (auto& [id, t] : by_id) {
    d.tokens[id] = t.first;
    d.types[id] = t.second;
  }
}

/// spm-like scores from merge ranks: a token made by merge r scores -r; others score very low.
void spm_scores_from_merges(tokenizer_data& d) {
  std::unordered_map<std::string, int32_t> ids;
  for (size_t i = 0; i < d.tokens.size(); ++i) ids[d.tokens[i]] = static_cast<int32_t>(i);
  d.scores.assign(d.tokens.size(), -1e9f);
  for (size_t r = 0; r < d.merges.size(); ++r) {
    const auto& m = d.merges[r];
    const size_t sp = m.find(' ', 1);
    if (sp == std::string::npos) continue;
    auto it = ids.find(m.substr(0, sp) + m.substr(sp + 1));
    if (it != ids.end() && d.scores[it->second] == -1e9f) d.scores[it->second] = -static_cast<float>(r);
  }
  for (size_t i = 0; i < d.tokens.size(); ++i) {
    const auto& t = d.tokens[i];
    if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t.back() == '>') d.types[i] = token_type::byte;
  }
  d.merges.clear();
}

/// BOS rule when the config does not say: the post_processor's template adds it.
bool post_processor_adds(const json& j, const std::string& tok) {
  if (tok.empty() || !j.contains("post_processor") || j["post_processor"].is_null()) return false;
  const std::string pp = j["post_processor"].dump();
  return pp.find("\"id\":" + json(tok).dump()) != std::string::npos;
}

void read_config(const fs::path& dir, const json& tj, tokenizer_data& d) {
  const fs::path file = dir / "tokenizer_config.json";
  json cfg = json::object();
  if (fs::exists(file)) cfg = read_json(file);
  if (!cfg.is_object()) fail(file, "", "must be a JSON object");
  auto id_of = [&](const std::string& text, const char* key) -> int32_t {
    if (text.empty()) return -1;
    for (size_t i = 0; i < d.tokens.size(); ++i)
      if (d.tokens[i] == text) return static_cast<int32_t>(i);
    fail(file, key, "token '" + text + "' is not in the vocabulary");
  };
  const std::string bos = token_text(cfg, "bos_token", file);
  d.bos_id = id_of(bos, "bos_token");
  d.eos_id = id_of(token_text(cfg, "eos_token", file), "eos_token");
  d.pad_id = id_of(token_text(cfg, "pad_token", file), "pad_token");
  for (int32_t id : {d.bos_id, d.eos_id, d.pad_id})  // configured special tokens are control tokens
    if (id >= 0 && d.types[id] == token_type::normal) d.types[id] = token_type::control;
  auto flag = [&](const char* key, bool def) {
    if (!cfg.contains(key) || cfg[key].is_null()) return def;
    if (!cfg[key].is_boolean()) fail(file, key, "must be true or false");
    return cfg[key].get<bool>();
  };
  d.add_bos = flag("add_bos_token", post_processor_adds(tj, bos)) && d.bos_id >= 0;
  d.add_eos = flag("add_eos_token", false) && d.eos_id >= 0;
  if (cfg.contains("chat_template") && !cfg["chat_template"].is_null()) {
    const json& ct = cfg["chat_template"];
    if (ct.is_string()) {
      d.chat_template = ct.get<std::string>();
    } else if (ct.is_array()) {
      for (const auto& e : ct)
        if (string_at(e, "name", "", file, "chat_template[]") == "default" && e.contains("template") &&
            e["template"].is_string())
          d.chat_template = e["template"].get<std::string>();
      if (d.chat_template.empty()) fail(file, "chat_template", "list has no {name: \"default\", template} entry");
    } else {
      fail(file, "chat_template", "must be a string or a list of {name, template}");
    }
  } else if (fs::exists(dir / "chat_template.jinja")) {
    d.chat_template = read_text(dir / "chat_template.jinja");
  }
}

void add_eog_ids(tokenizer_data& d) {
  static const char* const k_eog[] = {"<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|endoftext|>", "<|end_of_text|>",
                                      "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>", "</s>",
                                      "<end_of_turn>", "<|end|>"};
  if (d.eos_id >= 0) d.eog_ids.push_back(d.eos_id);
  for (size_t i = 0; i < d.tokens.size(); ++i) {
    if (d.types[i] != token_type::control || static_cast<int32_t>(i) == d.eos_id) continue;
    for (const char* e : k_eog)
      if (d.tokens[i] == e) d.eog_ids.push_back(static_cast<int32_t>(i));
  }
}

}  // namespace

tokenizer_data load_hf_tokenizer(const std::string& dir_name) {
  const fs::path dir(dir_name);
  const fs::path file = dir / "tokenizer.json";
  if (!fs::exists(file)) fail(file, "", "not found");
  const json j = read_json(file);
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) fail(file, "model", "missing or not an object");
  const json& model = j["model"];
  const std::string type = string_at(model, "type", "", file, "model");
  if (type != "BPE") fail(file, "model.type", "unsupported tokenizer.json model type '" + type + "' (only BPE)");
  tokenizer_data d;
  read_vocab(j, file, d);
  d.merges = read_merges(model, file);
  bool add_prefix = false;
  if (is_spm_like(j, add_prefix, file)) {
    d.kind = tokenizer_kind::spm;
    d.pre = "default";
    d.add_space_prefix = add_prefix;
    spm_scores_from_merges(d);
  } else {
    d.kind = tokenizer_kind::bpe;
    d.pre = detect_pre(j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json(), file);
  }
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    const std::string unk = model["unk_token"].get<std::string>();
    for (size_t i = 0; i < d.tokens.size(); ++i)
      if (d.tokens[i] == unk) {
        d.unk_id = static_cast<int32_t>(i);
        d.types[i] = token_type::unknown;
      }
  }
  read_config(dir, j, d);
  add_eog_ids(d);
  return d;
}

}  // namespace troupe
