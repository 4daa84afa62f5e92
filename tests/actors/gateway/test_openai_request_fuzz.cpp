// HTTP request bodies as untrusted input: bodies as the OpenAI SDKs send them (chat and
// completions; streaming, n, stop, logprobs, content parts, token prompts), mutated as
// bytes and as JSON values, go through everything the gateway does before admission
// (parse, validate, tokenize with the real SmolLM2 tokenizer, fit the context) and either
// pass or raise an api_error with a 4xx status and a message; nothing else escapes.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "actors/gateway/openai_request.h"
#include "fuzz_support.h"
#include "runtime/model/model.h"
#include "test_support.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::fuzz;
using nlohmann::json;

namespace {

/// One request body and the endpoint it is sent to.
struct body {
  bool chat = true;
  std::string text;
};

const std::vector<body>& real_bodies() {
  static const std::vector<body> b = {
      {true, R"({"model": "SmolLM2-135M-Instruct.Q4_1", "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}]})"},
      {true, R"({"model": "SmolLM2-135M-Instruct.Q4_1", "messages": [{"role": "user", "content": [{"type": "text", "text": "What is in this text?"}, {"type": "text", "text": "A sea."}]}], "stream": true, "stream_options": {"include_usage": true}, "max_tokens": 64, "temperature": 0.7, "top_p": 0.9, "n": 2, "stop": ["\n\n", "END"], "seed": 42, "logprobs": true, "top_logprobs": 3, "presence_penalty": 0.5, "frequency_penalty": 0.5, "user": "user-1234"})"},
      {true, R"({"model": "SmolLM2-135M-Instruct.Q4_1", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Tell me a joke."}], "max_completion_tokens": 32, "stop": ".", "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1})"},
      {false, R"({"model": "SmolLM2-135M-Instruct.Q4_1", "prompt": "Say this is a test", "max_tokens": 7, "temperature": 0})"},
      {false, R"({"model": "SmolLM2-135M-Instruct.Q4_1", "prompt": ["Once upon a time", "The sea"], "n": 2, "logprobs": 2, "echo": false, "stream": true, "stop": "\n", "seed": 1, "max_tokens": 16})"},
      {false, R"({"model": "SmolLM2-135M-Instruct.Q4_1", "prompt": [1, 504, 3287, 28], "max_tokens": 16, "ignore_eos": true})"},
      {false, R"({"model": "SmolLM2-135M-Instruct.Q4_1", "prompt": [[1, 504], [3287, 28]], "suffix": null, "best_of": 1})"}};
  return b;
}

std::shared_ptr<const model> meta() {
  static auto m = model::load_metadata(default_model());
  return m;
}

/// Everything the gateway does with a body before it admits the request.
void admit(const body& b, const request_limits& limits) {
  const json j = parse_json_body(b.text);
  openai_request r = b.chat ? parse_chat_request(j, limits) : parse_completion_request(j, limits);
  const auto prompts = tokenize_request(r, meta()->tokenizer());
  fit_context(r, prompts, 8192);
}

}  // namespace

TEST_CASE("mutated OpenAI request bodies pass or raise a 4xx api_error with a message", "[gateway][openai][fuzz]") {
  request_limits limits;
  limits.model_name = "SmolLM2-135M-Instruct.Q4_1";
  for (const auto& b : real_bodies()) {
    INFO(b.text);
    CHECK_NOTHROW(admit(b, limits));
  }
  rng r(0x68747470);
  tally t;
  for (int c = 0; c < 2000; ++c) {
    body b = real_bodies()[static_cast<size_t>(c) % real_bodies().size()];
    if (r.below(2)) {
      b.text = mutate(b.text, r, true);
    } else {
      json j = json::parse(b.text);
      mutate_json(j, r);
      if (r.below(2)) mutate_json(j, r);
      b.text = dump(j);
    }
    if (r.below(10) == 0) b.chat = !b.chat;
    expect_clear<api_error>(
        t, "case " + std::to_string(c) + (b.chat ? " (chat): " : " (completions): ") + b.text, [&] { admit(b, limits); },
        [](const api_error& e) { return e.status >= 400 && e.status < 500; });
  }
  INFO("admitted " << t.parsed << ", rejected " << t.rejected);
  CHECK(t.parsed + t.rejected == 2000);
  CHECK(t.parsed > 100);
  CHECK(t.rejected > 500);
}
