#pragma once
/// OpenAI request bodies -> validated internal requests. Every error is an api_error
/// that carries the HTTP status and names the offending field (`param`), as OpenAI's
/// error JSON does. Unknown fields are ignored, as OpenAI-compatible servers do.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/model/generation_defaults.h"
#include "runtime/text/chat_template.h"
#include "runtime/engine/sampler.h"
#include "runtime/text/tokenizer.h"

namespace troupe {

/// An error answered with OpenAI's `{"error": {message, type, param, code}}`.
struct api_error : std::runtime_error {
  /// `type` "" = derived from `status` (invalid_request_error, authentication_error, ...).
  api_error(int status, const std::string& message, std::string param = "", std::string code = "",
            std::string type = "");
  int status;         ///< HTTP status code
  std::string param;  ///< the request field at fault ("" = none)
  std::string code;   ///< OpenAI error code ("model_not_found", ...; "" = none)
  std::string type;   ///< OpenAI error type
};

/// Which endpoint a request came to.
enum class api_endpoint { completions, chat_completions };

/// One prompt of /v1/completions: text, or token ids.
struct prompt_input {
  std::string text;             ///< the prompt text (when !is_tokens)
  std::vector<int32_t> tokens;  ///< the prompt token ids (when is_tokens)
  bool is_tokens = false;       ///< tokens were given instead of text
};

/// A parsed, validated OpenAI request (before tokenization).
struct openai_request {
  api_endpoint endpoint = api_endpoint::completions;  ///< where it came
  std::string model;                                  ///< the `model` field
  std::vector<prompt_input> prompts;                  ///< completions: one or more prompts
  std::vector<chat_message> messages;                 ///< chat: the conversation
  sampling_params params;     ///< sampling of choice 0 (others differ by seed)
  bool has_seed = false;      ///< `seed` was given
  bool has_max_tokens = false;  ///< max_tokens / max_completion_tokens was given
  int n = 1;                  ///< choices per prompt
  bool stream = false;        ///< answer as server-sent events
  bool include_usage = false;  ///< stream_options.include_usage
  int logprobs = -1;          ///< -1 = none; else top alternatives per token (0..20)
  std::string user;           ///< the `user` field (logged, not used)
};

/// Limits, names and defaults that requests are checked against and completed with.
struct request_limits {
  std::string model_name;  ///< the served model; another name is 404 ("" = accept any)
  int max_n = 16;          ///< most choices per prompt
  size_t max_prompts = 256;  ///< most prompts in one completions request
  /// Sampling defaults for the fields a request leaves out (the cluster file's
  /// model.generation_defaults over the model file's); unset fields get OpenAI's.
  generation_defaults defaults;
  /// Cap on max_tokens of a request that gives none (server.max_tokens_default).
  int max_tokens_default = 512;
};

/// Parses a request body; 400 naming the byte offset when it is not a JSON object.
nlohmann::json parse_json_body(std::string_view body);

/// Validates a /v1/completions body.
openai_request parse_completion_request(const nlohmann::json& body, const request_limits& limits);

/// Validates a /v1/chat/completions body.
openai_request parse_chat_request(const nlohmann::json& body, const request_limits& limits);

/// The prompt token ids of each prompt (chat: the one rendered conversation). Text is
/// encoded as `troupe generate` does (special tokens parsed, the model's BOS rule);
/// token ids must lie in the vocabulary. 400 naming prompt/messages otherwise.
std::vector<std::vector<int32_t>> tokenize_request(const openai_request& r, const tokenizer& tok);

/// Checks prompts against the context (`context` tokens per sequence) and bounds the
/// default max_tokens of a request that gave none by what the context leaves. 400 naming
/// prompt/messages when a prompt does not fit, max_tokens when the output would not.
void fit_context(openai_request& r, const std::vector<std::vector<int32_t>>& prompts, int context);

}  // namespace troupe
