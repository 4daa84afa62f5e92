// OpenAI request bodies become validated internal requests; every error names its field.
// Response objects have OpenAI's shape.
#include <catch2/catch.hpp>

#include "actors/gateway/openai_request.h"
#include "actors/gateway/openai_response.h"
#include "runtime/model/model.h"
#include "test_support.h"

using namespace troupe;
using json = nlohmann::json;

namespace {

request_limits limits() {
  request_limits l;
  l.model_name = "m";
  l.max_n = 4;
  return l;
}

openai_request completion(const json& body) { return parse_completion_request(body, limits()); }
openai_request chat(const json& body) { return parse_chat_request(body, limits()); }

/// The api_error `fn` throws (fails the test when it throws none).
template <class F>
api_error error_of(F&& fn) {
  try {
    fn();
  } catch (const api_error& e) {
    return e;
  }
  FAIL("no api_error was thrown");
  return api_error(0, "");
}

std::shared_ptr<const model> meta() {
  static auto m = model::load_metadata(test::default_model());
  return m;
}

}  // namespace

TEST_CASE("a completion request carries every sampling field", "[openai]") {
  auto r = completion({{"model", "m"}, {"prompt", "hi"}, {"max_tokens", 7}, {"temperature", 0.5},
                       {"top_p", 0.9}, {"top_k", 40}, {"min_p", 0.05}, {"n", 2}, {"stop", "x"},
                       {"seed", 42}, {"presence_penalty", 0.5}, {"frequency_penalty", -0.5},
                       {"repetition_penalty", 1.1}, {"logprobs", 3}, {"stream", true},
                       {"stream_options", {{"include_usage", true}}}, {"ignore_eos", true},
                       {"user", "u1"}, {"unknown_field", {1, 2}}});
  CHECK(r.endpoint == api_endpoint::completions);
  REQUIRE(r.prompts.size() == 1);
  CHECK(r.prompts[0].text == "hi");
  CHECK(r.params.max_tokens == 7);
  CHECK(r.params.temperature == Approx(0.5));
  CHECK(r.params.top_p == Approx(0.9));
  CHECK(r.params.top_k == 40);
  CHECK(r.params.min_p == Approx(0.05));
  CHECK(r.n == 2);
  CHECK(r.params.stop == std::vector<std::string>{"x"});
  CHECK(r.has_seed);
  CHECK(r.params.seed == 42);
  CHECK(r.params.presence_penalty == Approx(0.5));
  CHECK(r.params.frequency_penalty == Approx(-0.5));
  CHECK(r.params.repetition_penalty == Approx(1.1));
  CHECK(r.logprobs == 3);
  CHECK(r.params.logprobs == 3);
  CHECK(r.stream);
  CHECK(r.include_usage);
  CHECK(r.params.ignore_eos);
  CHECK(r.user == "u1");
}

TEST_CASE("a completion request without optional fields gets OpenAI's defaults", "[openai]") {
  auto r = completion({{"model", "m"}, {"prompt", "hi"}, {"temperature", nullptr}});
  CHECK(r.params.max_tokens == 16);
  CHECK(r.params.temperature == Approx(1.0));
  CHECK_FALSE(r.has_seed);
  CHECK(r.n == 1);
  CHECK(r.logprobs == -1);
  CHECK(r.params.logprobs == 0);
  CHECK_FALSE(r.stream);
}

TEST_CASE("prompts may be a string, strings, token ids or lists of token ids", "[openai]") {
  auto strings = completion({{"model", "m"}, {"prompt", {"a", "b"}}});
  REQUIRE(strings.prompts.size() == 2);
  CHECK(strings.prompts[1].text == "b");
  auto ids = completion({{"model", "m"}, {"prompt", {1, 2, 3}}});
  REQUIRE(ids.prompts.size() == 1);
  CHECK(ids.prompts[0].is_tokens);
  CHECK(ids.prompts[0].tokens == std::vector<int32_t>{1, 2, 3});
  auto lists = completion({{"model", "m"}, {"prompt", {{1, 2}, {3}}}});
  REQUIRE(lists.prompts.size() == 2);
  CHECK(lists.prompts[1].tokens == std::vector<int32_t>{3});
}

TEST_CASE("a bad field is rejected with 400 naming the field", "[openai]") {
  const json base = {{"model", "m"}, {"prompt", "hi"}};
  const std::vector<std::pair<json, std::string>> cases = {
      {{{"temperature", -1}}, "temperature"},       {{{"temperature", "hot"}}, "temperature"},
      {{{"top_p", 0}}, "top_p"},                    {{{"top_p", 1.5}}, "top_p"},
      {{{"top_k", -2}}, "top_k"},                   {{{"min_p", 2}}, "min_p"},
      {{{"n", 0}}, "n"},                            {{{"n", 5}}, "n"},
      {{{"n", 1.5}}, "n"},                          {{{"max_tokens", 0}}, "max_tokens"},
      {{{"max_tokens", "many"}}, "max_tokens"},     {{{"seed", "x"}}, "seed"},
      {{{"presence_penalty", 3}}, "presence_penalty"}, {{{"frequency_penalty", -3}}, "frequency_penalty"},
      {{{"repetition_penalty", 0}}, "repetition_penalty"}, {{{"logprobs", 21}}, "logprobs"},
      {{{"stream", "yes"}}, "stream"},              {{{"stop", 5}}, "stop"},
      {{{"stop", {"a", 1}}}, "stop[1]"},            {{{"stop", {""}}}, "stop[0]"},
      {{{"stream_options", 1}}, "stream_options"},  {{{"user", 1}}, "user"},
      {{{"prompt", json::array()}}, "prompt"},      {{{"prompt", {"a", 1}}}, "prompt[1]"},
      {{{"prompt", {1, -1}}}, "prompt[1]"},         {{{"prompt", 5}}, "prompt"},
      {{{"model", 5}}, "model"},
  };
  for (const auto& [patch, param] : cases) {
    json body = base;
    body.update(patch);
    INFO(body.dump());
    auto e = error_of([&] { completion(body); });
    CHECK(e.status == 400);
    CHECK(e.param == param);
    CHECK(std::string(e.what()).find(param) != std::string::npos);
  }
  auto missing = error_of([] { completion({{"model", "m"}}); });
  CHECK(missing.param == "prompt");
  auto no_model = error_of([] { completion({{"prompt", "x"}}); });
  CHECK(no_model.param == "model");
}

TEST_CASE("too many stop strings are rejected naming stop", "[openai]") {
  json stops = json::array();
  for (int i = 0; i < 17; ++i) stops.push_back("s" + std::to_string(i));
  auto e = error_of([&] { completion({{"model", "m"}, {"prompt", "x"}, {"stop", stops}}); });
  CHECK(e.status == 400);
  CHECK(e.param == "stop");
}

TEST_CASE("an unknown model is a 404 with code model_not_found", "[openai]") {
  auto e = error_of([] { completion({{"model", "other"}, {"prompt", "x"}}); });
  CHECK(e.status == 404);
  CHECK(e.param == "model");
  CHECK(e.code == "model_not_found");
}

TEST_CASE("a chat request takes messages with string or text-part content", "[openai]") {
  auto r = chat({{"model", "m"},
                 {"messages",
                  {{{"role", "system"}, {"content", "be brief"}},
                   {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}}}},
                   {{"role", "assistant"}, {"content", "ok"}},
                   {{"role", "user"}, {"content", "more"}}}},
                 {"max_completion_tokens", 9},
                 {"max_tokens", 100},
                 {"logprobs", true},
                 {"top_logprobs", 2}});
  REQUIRE(r.messages.size() == 4);
  CHECK(r.messages[1].role == "user");
  CHECK(r.messages[1].content == "ab");
  CHECK(r.params.max_tokens == 9);
  CHECK(r.logprobs == 2);
  CHECK(r.params.logprobs == 2);
}

TEST_CASE("bad chat messages are rejected naming the message field", "[openai]") {
  const std::vector<std::pair<json, std::string>> cases = {
      {json::array(), "messages"},
      {"hi", "messages"},
      {{{{"content", "x"}}}, "messages[0].role"},
      {{{{"role", "robot"}, {"content", "x"}}}, "messages[0].role"},
      {{{{"role", "user"}, {"content", 5}}}, "messages[0].content"},
      {{{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}, "messages[0].content[0].type"},
      {{{{"role", "user"}, {"content", {{{"type", "text"}}}}}}, "messages[0].content[0].text"},
      {{1}, "messages[0]"},
  };
  for (const auto& [messages, param] : cases) {
    INFO(messages.dump());
    auto e = error_of([&] { chat({{"model", "m"}, {"messages", messages}}); });
    CHECK(e.status == 400);
    CHECK(e.param == param);
  }
  auto top = error_of([] {
    chat({{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}, {"top_logprobs", 2}});
  });
  CHECK(top.param == "top_logprobs");
}

TEST_CASE("a body that is not a JSON object is a 400", "[openai]") {
  auto bad_json = error_of([] { parse_json_body("{\"model\": "); });
  CHECK(bad_json.status == 400);
  CHECK(std::string(bad_json.what()).find("not valid JSON") != std::string::npos);
  auto array = error_of([] { parse_json_body("[1, 2]"); });
  CHECK(array.status == 400);
  CHECK(parse_json_body(R"({"a": 1})").at("a") == 1);
}

TEST_CASE("prompts are tokenized as troupe generate does and checked against the vocabulary", "[openai][slow]") {
  const auto& tok = meta()->tokenizer();
  auto r = completion({{"model", "m"}, {"prompt", "Hello world"}});
  auto ids = tokenize_request(r, tok);
  REQUIRE(ids.size() == 1);
  CHECK(ids[0] == tok.encode("Hello world", true, true));
  auto c = chat({{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}});
  auto chat_ids = tokenize_request(c, tok);
  REQUIRE(chat_ids.size() == 1);
  CHECK(chat_ids[0] == tok.encode(apply_chat_template(tok.data(), {{"user", "Hi"}}, true), true, true));
  auto out_of_vocab = completion({{"model", "m"}, {"prompt", {1, tok.vocab_size()}}});
  auto e = error_of([&] { tokenize_request(out_of_vocab, tok); });
  CHECK(e.status == 400);
  CHECK(e.param == "prompt");
}

TEST_CASE("a prompt that does not fit the context is a 400 naming prompt or max_tokens", "[openai]") {
  auto r = completion({{"model", "m"}, {"prompt", "x"}});
  auto e = error_of([&] { fit_context(r, {std::vector<int32_t>(10, 1)}, 10); });
  CHECK(e.status == 400);
  CHECK(e.param == "prompt");
  auto m = completion({{"model", "m"}, {"prompt", "x"}, {"max_tokens", 8}});
  auto too_long = error_of([&] { fit_context(m, {std::vector<int32_t>(5, 1)}, 10); });
  CHECK(too_long.param == "max_tokens");
  auto empty = error_of([&] { fit_context(m, {std::vector<int32_t>{}}, 10); });
  CHECK(empty.param == "prompt");
  auto c = chat({{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}});
  fit_context(c, {std::vector<int32_t>(4, 1)}, 10);
  CHECK(c.params.max_tokens == 6);
  auto d = completion({{"model", "m"}, {"prompt", "x"}});
  fit_context(d, {std::vector<int32_t>(4, 1)}, 10);
  CHECK(d.params.max_tokens == 6);
}

TEST_CASE("errors render as OpenAI's error object", "[openai]") {
  auto j = error_body(api_error(400, "temperature must be in [0, 2]", "temperature"));
  CHECK(j.at("error").at("message") == "temperature must be in [0, 2]");
  CHECK(j.at("error").at("type") == "invalid_request_error");
  CHECK(j.at("error").at("param") == "temperature");
  CHECK(j.at("error").at("code").is_null());
  CHECK(error_body(api_error(429, "busy")).at("error").at("type") == "rate_limit_error");
  CHECK(error_body(api_error(401, "no key")).at("error").at("type") == "authentication_error");
}

TEST_CASE("responses and chunks have OpenAI's shape", "[openai][slow]") {
  const auto& tok = meta()->tokenizer();
  response_meta m;
  m.id = make_response_id(api_endpoint::chat_completions);
  m.model = "m";
  m.created = 5;
  m.endpoint = api_endpoint::chat_completions;
  m.logprobs = 1;
  choice_output out{"Hi", "stop", {{tok.encode("Hi", false, false)[0], -0.25f, {{1, -0.5f}, {2, -1.0f}}}}};
  auto full = response_body(m, {out}, {3, 1}, tok);
  CHECK(full.at("id").get<std::string>().rfind("chatcmpl-", 0) == 0);
  CHECK(full.at("object") == "chat.completion");
  CHECK(full.at("choices")[0].at("message").at("content") == "Hi");
  CHECK(full.at("choices")[0].at("finish_reason") == "stop");
  CHECK(full.at("choices")[0].at("logprobs").at("content")[0].at("logprob") == Approx(-0.25));
  CHECK(full.at("choices")[0].at("logprobs").at("content")[0].at("top_logprobs").size() == 1);
  CHECK(full.at("usage").at("total_tokens") == 4);
  auto role = chunk_body(m, 0, "", {}, 0, "", true, tok);
  CHECK(role.at("object") == "chat.completion.chunk");
  CHECK(role.at("choices")[0].at("delta").at("role") == "assistant");
  CHECK(role.at("choices")[0].at("finish_reason").is_null());
  auto last = chunk_body(m, 0, "", {}, 0, "length", false, tok);
  CHECK(last.at("choices")[0].at("delta").empty());
  CHECK(last.at("choices")[0].at("finish_reason") == "length");
  auto usage = usage_chunk(m, {3, 1});
  CHECK(usage.at("choices").empty());
  CHECK(usage.at("usage").at("completion_tokens") == 1);
  m.endpoint = api_endpoint::completions;
  auto text = response_body(m, {out}, {3, 1}, tok);
  CHECK(text.at("object") == "text_completion");
  CHECK(text.at("choices")[0].at("text") == "Hi");
  CHECK(text.at("choices")[0].at("logprobs").at("tokens")[0] == "Hi");
  CHECK(text.at("choices")[0].at("logprobs").at("text_offset")[0] == 0);
  CHECK(sse_event(json{{"a", 1}}) == "data: {\"a\":1}\n\n");
  CHECK(dump_json(json(std::string("\xff"))) == "\"\xef\xbf\xbd\"");
}

namespace {

/// Limits with server defaults: temperature 0.3 and top_k 5 (as from the cluster file over
/// the model file), and a cap of 100 tokens for requests without max_tokens.
request_limits limits_with_defaults() {
  request_limits l = limits();
  l.defaults.temperature = 0.3f;
  l.defaults.top_k = 5;
  l.max_tokens_default = 100;
  return l;
}

}  // namespace

TEST_CASE("a request's own sampling fields win over the server's defaults", "[openai][generation]") {
  auto r = parse_chat_request({{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "x"}}}},
                               {"temperature", 0.9}, {"top_k", 2}, {"max_tokens", 300}},
                              limits_with_defaults());
  CHECK(r.params.temperature == Approx(0.9));
  CHECK(r.params.top_k == 2);
  CHECK(r.params.max_tokens == 300);
}

TEST_CASE("fields a request leaves out take the server's defaults, then OpenAI's", "[openai][generation]") {
  auto r = parse_chat_request({{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}},
                              limits_with_defaults());
  CHECK(r.params.temperature == Approx(0.3));
  CHECK(r.params.top_k == 5);
  CHECK(r.params.top_p == Approx(1.0));
  CHECK(r.params.min_p == Approx(0.0));
  CHECK(r.params.repetition_penalty == Approx(1.0));
  CHECK_FALSE(r.has_max_tokens);
  CHECK(r.params.max_tokens == 100);
  auto nulls = parse_completion_request({{"model", "m"}, {"prompt", "x"}, {"temperature", nullptr}},
                                        limits_with_defaults());
  CHECK(nulls.params.temperature == Approx(0.3));
}

TEST_CASE("every sampling default the server has reaches a request that leaves it out", "[openai][generation]") {
  request_limits l = limits();
  l.defaults.temperature = 0.2f;
  l.defaults.top_p = 0.9f;
  l.defaults.top_k = 40;
  l.defaults.min_p = 0.05f;
  l.defaults.repetition_penalty = 1.1f;
  l.defaults.presence_penalty = 0.5f;
  l.defaults.frequency_penalty = -0.5f;
  l.defaults.max_tokens = 7;
  auto r = parse_completion_request({{"model", "m"}, {"prompt", "x"}}, l);
  CHECK(r.params.temperature == Approx(0.2));
  CHECK(r.params.top_p == Approx(0.9));
  CHECK(r.params.top_k == 40);
  CHECK(r.params.min_p == Approx(0.05));
  CHECK(r.params.repetition_penalty == Approx(1.1));
  CHECK(r.params.presence_penalty == Approx(0.5));
  CHECK(r.params.frequency_penalty == Approx(-0.5));
  CHECK(r.params.max_tokens == 7);
}

TEST_CASE("a chat request without max_tokens stops at server.max_tokens_default, or sooner at the context",
          "[openai][generation]") {
  request_limits l = limits();
  l.max_tokens_default = 512;
  auto r = parse_chat_request({{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}}, l);
  CHECK(r.params.max_tokens == 512);
  fit_context(r, {std::vector<int32_t>(10, 1)}, 8192);
  CHECK(r.params.max_tokens == 512);
  fit_context(r, {std::vector<int32_t>(10, 1)}, 100);
  CHECK(r.params.max_tokens == 90);
}

TEST_CASE("server.max_tokens_default caps the defaults' max_tokens but not the request's", "[openai][generation]") {
  request_limits l = limits();
  l.defaults.max_tokens = 2000;
  l.max_tokens_default = 512;
  auto capped = parse_chat_request({{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}}, l);
  CHECK(capped.params.max_tokens == 512);
  auto completion_default = parse_completion_request({{"model", "m"}, {"prompt", "x"}}, limits());
  CHECK(completion_default.params.max_tokens == 16);
  auto asked = parse_chat_request(
      {{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}, {"max_tokens", 1000}}, l);
  CHECK(asked.params.max_tokens == 1000);
  fit_context(asked, {std::vector<int32_t>(10, 1)}, 8192);
  CHECK(asked.params.max_tokens == 1000);
}
