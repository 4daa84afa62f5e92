#pragma once
/// Chat templates: recognises a model's Jinja chat template by family and renders
/// messages exactly as that template would (no general Jinja engine).
#include <string>
#include <vector>

#include "runtime/text/tokenizer_data.h"

namespace troupe {

/// One chat message (OpenAI style).
struct chat_message {
  std::string role;     ///< "system", "user", "assistant", "tool"
  std::string content;  ///< message text
};

/// The supported template families.
enum class chat_template_kind {
  chatml,           ///< <|im_start|>role\n...<|im_end|>\n (SmolLM2, Qwen2), optional default system prompt
  qwen2_5,          ///< ChatML with Qwen2.5's tool-response handling and default system prompt
  llama3,           ///< Meta-Llama-3-Instruct: bos + <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
  llama3_1,         ///< Llama 3.1/3.2/3.3: always a system header with "Cutting Knowledge Date" and "Today Date"
  llama2,           ///< Llama-2-chat: <s>[INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST]
  mistral_v1,       ///< Mistral-7B-Instruct v0.1/v0.2 (legacy): [INST] ... [/INST], no system role
  mistral_v1_sys,   ///< Mistral v0.2 "v1" template: " [INST] " with the system prompt before the first user message
  mistral_v3,       ///< Mistral v0.3 / "v3": "[INST] ...[/INST]", system prompt before the last user message
  mistral_v3_tekken,///< Mistral Nemo "v3-tekken": "[INST]...[/INST]" without spaces
  deepseek_r1,      ///< DeepSeek-R1(-Distill): <｜User｜>/<｜Assistant｜>, optional <think>\n generation prompt
};

/// Recognises the model's Jinja template text; throws std::runtime_error("unknown chat
/// template: ...") when it is none of the supported families, or when it is empty.
chat_template_kind detect_chat_template(const std::string& jinja);

/// Renders `msgs` exactly as the model's template (tok.chat_template) would, including
/// default system prompts it injects, with the generation prompt appended when asked.
/// bos_token/eos_token are the texts of tok.bos_id/tok.eos_id. Throws std::runtime_error
/// where the template raises an exception (e.g. roles that do not alternate) and for
/// an empty message list.
std::string apply_chat_template(const tokenizer_data& tok, const std::vector<chat_message>& msgs,
                                bool add_generation_prompt);

/// A short name for the family ("chatml", "llama3", ...).
const char* chat_template_name(chat_template_kind k);

}  // namespace troupe
