#pragma once
/// OpenAI response bodies: completion, chat.completion, their streaming chunks, the
/// usage chunk, model lists and the error object, as OpenAI sends them.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "actors/gateway/openai_request.h"

namespace troupe {

/// One generated token and its log-probabilities (for the logprobs fields).
struct token_record {
  int32_t token = -1;              ///< the token id
  float logprob = 0.0f;            ///< its log-probability
  std::vector<token_logprob> top;  ///< [<= 20] best alternatives, descending
};

/// What one choice produced.
struct choice_output {
  std::string text;                  ///< the generated text (stop strings excluded)
  std::string finish_reason;         ///< "stop" or "length"
  std::vector<token_record> tokens;  ///< generated tokens (logprobs filled when asked)
};

/// Fields every object of one response shares.
struct response_meta {
  std::string id;                 ///< "cmpl-..." or "chatcmpl-..."
  int64_t created = 0;            ///< unix seconds
  std::string model;              ///< the served model name
  api_endpoint endpoint = api_endpoint::completions;  ///< which object kind
  int logprobs = -1;              ///< -1 = none; else top alternatives per token
  bool include_usage = false;     ///< streams: every chunk carries "usage": null
};

/// Token counts of a response.
struct usage_counts {
  int64_t prompt_tokens = 0;      ///< over every prompt (once per prompt, not per choice)
  int64_t completion_tokens = 0;  ///< over every choice
};

/// A fresh random id with the endpoint's prefix ("cmpl-" or "chatcmpl-").
std::string make_response_id(api_endpoint e);

/// `{"error": {"message", "type", "param", "code"}}` (param/code null when empty).
nlohmann::json error_body(const api_error& e);

/// GET /v1/models: a list with the one served model.
nlohmann::json models_body(const std::string& name, int64_t created);

/// GET /v1/models/{name}: one model object.
nlohmann::json model_body(const std::string& name, int64_t created);

/// `{"prompt_tokens", "completion_tokens", "total_tokens"}`.
nlohmann::json usage_body(const usage_counts& u);

/// The whole non-streaming answer ("text_completion" or "chat.completion").
nlohmann::json response_body(const response_meta& meta, const std::vector<choice_output>& choices,
                             const usage_counts& usage, const tokenizer& tok);

/// A streaming chunk of choice `index`: `text` and the `tokens` it came from (for
/// logprobs; `text_offset` = characters of the choice before this chunk), `finish_reason`
/// ("" = null). Chat: `role` adds delta.role ("assistant") with empty content.
nlohmann::json chunk_body(const response_meta& meta, int index, const std::string& text,
                          const std::vector<token_record>& tokens, size_t text_offset,
                          const std::string& finish_reason, bool role, const tokenizer& tok);

/// The last chunk of a stream with stream_options.include_usage: `choices: []` and usage.
nlohmann::json usage_chunk(const response_meta& meta, const usage_counts& usage);

/// JSON text with invalid UTF-8 replaced by U+FFFD (token bytes may split characters).
std::string dump_json(const nlohmann::json& j);

/// One server-sent event: "data: <json>\n\n".
std::string sse_event(const nlohmann::json& j);

}  // namespace troupe
