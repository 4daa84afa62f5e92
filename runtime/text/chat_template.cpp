#include "runtime/text/chat_template.h"

#include <nlohmann/json.hpp>

#include <ctime>
#include <stdexcept>

namespace troupe {
namespace {

bool has(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

/// Python's str.strip() for ASCII whitespace (Jinja's trim filter).
std::string trim(const std::string& s) {
  const char* ws = " \t\n\r\v\f";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

/// A newline inside a Jinja string literal: a real newline or the escape "\n".
bool newline_at(const std::string& s, size_t& i) {
  if (i < s.size() && s[i] == '\n') return ++i, true;
  if (s.compare(i, 2, "\\n") == 0) return i += 2, true;
  return false;
}

/// The default system prompt written as a literal "<|im_start|>system\n...<|im_end|>".
std::string chatml_default_system(const std::string& t) {
  const std::string head = "<|im_start|>system";
  for (size_t p = t.find(head); p != std::string::npos; p = t.find(head, p + 1)) {
    size_t i = p + head.size();
    if (!newline_at(t, i)) continue;
    const size_t end = t.find("<|im_end|>", i);
    if (end == std::string::npos) continue;
    const std::string body = t.substr(i, end - i);
    if (body.find_first_of("'\"+{}") != std::string::npos) continue;  // not a plain literal
    std::string out;
    for (size_t k = 0; k < body.size();) {
      if (!newline_at(body, k)) out += body[k++];
      else out += '\n';
    }
    return out;
  }
  return {};
}

std::string token_text(const tokenizer_data& tok, int32_t id) {
  return id >= 0 && id < static_cast<int32_t>(tok.tokens.size()) ? tok.tokens[id] : std::string();
}

[[noreturn]] void raise(chat_template_kind k, const std::string& what) {
  throw std::runtime_error(std::string("chat template ") + chat_template_name(k) + ": " + what);
}

/// Checks user/assistant alternation starting with user (Llama 2 and Mistral templates).
void check_alternation(chat_template_kind k, const std::vector<chat_message>& msgs, size_t from, const char* what) {
  for (size_t i = from; i < msgs.size(); ++i)
    if ((msgs[i].role == "user") != ((i - from) % 2 == 0)) raise(k, what);
}

std::string render_chatml(chat_template_kind k, const std::string& t, const std::vector<chat_message>& msgs, bool gen) {
  const std::string def = chatml_default_system(t);
  std::string out;
  const bool first_is_system = !msgs.empty() && msgs[0].role == "system";
  if (!def.empty() && !first_is_system && (!msgs.empty() || k == chat_template_kind::qwen2_5))
    out += "<|im_start|>system\n" + def + "<|im_end|>\n";
  for (size_t i = 0; i < msgs.size(); ++i) {
    const auto& m = msgs[i];
    if (k == chat_template_kind::qwen2_5 && m.role == "tool") {
      if (i == 0 || msgs[i - 1].role != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + m.content + "\n</tool_response>";
      if (i + 1 == msgs.size() || msgs[i + 1].role != "tool") out += "<|im_end|>\n";
      continue;
    }
    out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  }
  if (gen) out += "<|im_start|>assistant\n";
  return out;
}

std::string llama31_date(const std::string& t) {
  if (has(t, "strftime_now")) {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%d %b %Y", &tm);
    return buf;
  }
  const std::string key = "set date_string = \"";
  const size_t p = t.find(key);
  if (p == std::string::npos) return "26 Jul 2024";
  const size_t e = t.find('"', p + key.size());
  return t.substr(p + key.size(), e - p - key.size());
}

std::string render_llama3(chat_template_kind k, const std::string& t, const tokenizer_data& tok,
                          const std::vector<chat_message>& msgs, bool gen) {
  auto header = [](const std::string& role) { return "<|start_header_id|>" + role + "<|end_header_id|>\n\n"; };
  std::string out = token_text(tok, tok.bos_id);
  size_t from = 0;
  if (k == chat_template_kind::llama3_1) {
    std::string sys;
    if (!msgs.empty() && msgs[0].role == "system") sys = trim(msgs[0].content), from = 1;
    out += header("system") + "Cutting Knowledge Date: December 2023\nToday Date: " + llama31_date(t) + "\n\n" + sys +
           "<|eot_id|>";
  }
  for (size_t i = from; i < msgs.size(); ++i) {
    const auto& m = msgs[i];
    if (k == chat_template_kind::llama3_1 && (m.role == "tool" || m.role == "ipython"))
      out += header("ipython") + nlohmann::json(m.content).dump() + "<|eot_id|>";
    else
      out += header(m.role) + trim(m.content) + "<|eot_id|>";
  }
  if (gen) out += header("assistant");
  return out;
}

std::string render_llama2(const tokenizer_data& tok, const std::vector<chat_message>& msgs) {
  const auto k = chat_template_kind::llama2;
  const std::string bos = token_text(tok, tok.bos_id), eos = token_text(tok, tok.eos_id);
  size_t from = 0;
  std::string sys;
  bool has_sys = false;
  if (!msgs.empty() && msgs[0].role == "system") sys = msgs[0].content, has_sys = true, from = 1;
  check_alternation(k, msgs, from, "Conversation roles must alternate user/assistant/user/assistant/...");
  std::string out;
  for (size_t i = from; i < msgs.size(); ++i) {
    std::string content = msgs[i].content;
    if (i == from && has_sys) content = "<<SYS>>\n" + sys + "\n<</SYS>>\n\n" + content;
    if (msgs[i].role == "user") out += bos + "[INST] " + trim(content) + " [/INST]";
    else if (msgs[i].role == "assistant") out += " " + trim(content) + " " + eos;
  }
  return out;
}

std::string render_mistral(chat_template_kind k, const tokenizer_data& tok, const std::vector<chat_message>& msgs) {
  const std::string bos = token_text(tok, tok.bos_id), eos = token_text(tok, tok.eos_id);
  if (k == chat_template_kind::mistral_v1) {
    check_alternation(k, msgs, 0, "Conversation roles must alternate user/assistant/user/assistant/...");
    std::string out = bos;
    for (const auto& m : msgs) {
      if (m.role == "user") out += "[INST] " + m.content + " [/INST]";
      else if (m.role == "assistant") out += m.content + eos;
      else raise(k, "Only user and assistant roles are supported!");
    }
    return out;
  }
  size_t from = 0;
  bool has_sys = false;
  std::string sys;
  if (!msgs.empty() && msgs[0].role == "system") sys = msgs[0].content, has_sys = true, from = 1;
  check_alternation(k, msgs, from,
                    "After the optional system message, conversation roles must alternate user/assistant/user/assistant/...");
  const bool v3 = k != chat_template_kind::mistral_v1_sys;
  const std::string open = k == chat_template_kind::mistral_v1_sys ? " [INST] " : k == chat_template_kind::mistral_v3 ? "[INST] " : "[INST]";
  const std::string close = k == chat_template_kind::mistral_v1_sys ? " [/INST]" : "[/INST]";
  std::string out = bos;
  for (size_t i = from; i < msgs.size(); ++i) {
    const auto& m = msgs[i];
    if (m.role == "user") {
      const bool with_sys = has_sys && (v3 ? i + 1 == msgs.size() : i == from);
      out += open + (with_sys ? sys + "\n\n" : "") + m.content + close;
    } else if (m.role == "assistant") {
      out += k == chat_template_kind::mistral_v3 ? " " + trim(m.content) + eos
             : k == chat_template_kind::mistral_v1_sys ? " " + m.content + eos
                                                      : m.content + eos;
    } else {
      raise(k, "Only user and assistant roles are supported, with the exception of an initial optional system message!");
    }
  }
  return out;
}

std::string render_deepseek_r1(const std::string& t, const tokenizer_data& tok, const std::vector<chat_message>& msgs,
                               bool gen) {
  const bool think = has(t, "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C><think>");
  const bool newline_outputs = has(t, "\\n<\xEF\xBD\x9Ctool\xE2\x96\x81output\xE2\x96\x81" "begin\xEF\xBD\x9C>") ||
                               has(t, "\n<\xEF\xBD\x9Ctool\xE2\x96\x81output\xE2\x96\x81" "begin\xEF\xBD\x9C>");
  const std::string user = "<\xEF\xBD\x9CUser\xEF\xBD\x9C>", assistant = "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>";
  const std::string eos = "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
  const std::string out_begin = "<\xEF\xBD\x9Ctool\xE2\x96\x81output\xE2\x96\x81" "begin\xEF\xBD\x9C>";
  const std::string out_end = "<\xEF\xBD\x9Ctool\xE2\x96\x81output\xE2\x96\x81" "end\xEF\xBD\x9C>";
  const std::string outs_begin = "<\xEF\xBD\x9Ctool\xE2\x96\x81outputs\xE2\x96\x81" "begin\xEF\xBD\x9C>";
  const std::string outs_end = "<\xEF\xBD\x9Ctool\xE2\x96\x81outputs\xE2\x96\x81" "end\xEF\xBD\x9C>";
  std::string system;
  for (const auto& m : msgs)
    if (m.role == "system") system = m.content;
  std::string out = token_text(tok, tok.bos_id) + system;
  bool is_tool = false, output_first = true;
  for (const auto& m : msgs) {
    if (m.role == "user") {
      is_tool = false;
      out += user + m.content;
    } else if (m.role == "assistant") {
      if (is_tool) {
        out += outs_end + m.content + eos;
        is_tool = false;
      } else {
        const size_t p = m.content.rfind("</think>");
        out += assistant + (p == std::string::npos ? m.content : m.content.substr(p + 8)) + eos;
      }
    } else if (m.role == "tool") {
      is_tool = true;
      if (output_first) out += outs_begin + out_begin + m.content + out_end, output_first = false;
      else out += (newline_outputs ? "\n" : "") + out_begin + m.content + out_end;
    }
  }
  if (is_tool) out += outs_end;
  if (gen && !is_tool) out += assistant + (think ? "<think>\n" : "");
  return out;
}

}  // namespace

chat_template_kind detect_chat_template(const std::string& t) {
  using k = chat_template_kind;
  if (t.empty()) throw std::runtime_error("unknown chat template: the model has no chat template (empty text)");
  if (has(t, "<\xEF\xBD\x9CUser\xEF\xBD\x9C>") && has(t, "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>")) return k::deepseek_r1;
  if (has(t, "<|im_start|>") && !has(t, "<|im_sep|>")) return has(t, "<tool_response>") ? k::qwen2_5 : k::chatml;
  if (has(t, "<|start_header_id|>") && has(t, "<|eot_id|>"))
    return has(t, "Cutting Knowledge Date") ? k::llama3_1 : k::llama3;
  if (has(t, "[INST]") && has(t, "<<SYS>>")) return k::llama2;
  if (has(t, "[INST]") && !has(t, "[SYSTEM_PROMPT]")) {
    if (has(t, "loop.last and system_message is defined"))
      return has(t, "\"[INST]\" +") || has(t, "'[INST]' +") ? k::mistral_v3_tekken : k::mistral_v3;
    if (has(t, "loop.first and system_message is defined")) return k::mistral_v1_sys;
    if (has(t, "Only user and assistant roles are supported!")) return k::mistral_v1;
  }
  throw std::runtime_error("unknown chat template: " + t.substr(0, 120) + (t.size() > 120 ? "..." : ""));
}

std::string apply_chat_template(const tokenizer_data& tok, const std::vector<chat_message>& msgs, bool gen) {
  const auto k = detect_chat_template(tok.chat_template);
  if (msgs.empty()) raise(k, "there are no messages to render");
  const std::string& t = tok.chat_template;
  switch (k) {
    case chat_template_kind::chatml:
    case chat_template_kind::qwen2_5: return render_chatml(k, t, msgs, gen);
    case chat_template_kind::llama3:
    case chat_template_kind::llama3_1: return render_llama3(k, t, tok, msgs, gen);
    case chat_template_kind::llama2: return render_llama2(tok, msgs);
    case chat_template_kind::mistral_v1:
    case chat_template_kind::mistral_v1_sys:
    case chat_template_kind::mistral_v3:
    case chat_template_kind::mistral_v3_tekken: return render_mistral(k, tok, msgs);
    case chat_template_kind::deepseek_r1: return render_deepseek_r1(t, tok, msgs, gen);
  }
  throw std::runtime_error("unknown chat template kind");
}

const char* chat_template_name(chat_template_kind k) {
  switch (k) {
    case chat_template_kind::chatml: return "chatml";
    case chat_template_kind::qwen2_5: return "qwen2.5";
    case chat_template_kind::llama3: return "llama3";
    case chat_template_kind::llama3_1: return "llama3.1";
    case chat_template_kind::llama2: return "llama2";
    case chat_template_kind::mistral_v1: return "mistral-v1";
    case chat_template_kind::mistral_v1_sys: return "mistral-v1-system";
    case chat_template_kind::mistral_v3: return "mistral-v3";
    case chat_template_kind::mistral_v3_tekken: return "mistral-v3-tekken";
    case chat_template_kind::deepseek_r1: return "deepseek-r1";
  }
  return "unknown";
}

}  // namespace troupe
