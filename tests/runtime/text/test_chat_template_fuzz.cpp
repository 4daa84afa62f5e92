// Chat templates and conversations as untrusted input: SmolLM2's real template (from the
// default model's GGUF) mutated byte by byte, and conversations of random roles and
// boundary contents, either render or raise the documented std::runtime_error ("chat
// template ..." / "unknown chat template ..."); nothing else escapes.
#include <catch2/catch.hpp>

#include <string>
#include <typeinfo>
#include <vector>

#include "fuzz_support.h"
#include "runtime/model/gguf.h"
#include "runtime/text/chat_template.h"
#include "test_support.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::fuzz;

namespace {

/// The default model's tokenizer.chat_template.
std::string real_template() {
  const gguf_file g(default_model());
  const auto t = g.get_string("tokenizer.chat_template");
  REQUIRE(t);
  return *t;
}

/// SmolLM2's special-token texts with `jinja` as the template.
tokenizer_data chatml_tokens(const std::string& jinja) {
  tokenizer_data d;
  d.tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  d.types = {token_type::control, token_type::control, token_type::control};
  d.bos_id = 1;
  d.eos_id = 2;
  d.chat_template = jinja;
  return d;
}

/// A conversation of 0 to 5 messages with random roles and boundary or mutated contents.
std::vector<chat_message> random_messages(rng& r) {
  static const std::vector<std::string> roles = {"system", "user", "assistant", "tool", "", "User", "developer",
                                                 "<|im_start|>", std::string(1, '\0')};
  std::vector<chat_message> msgs(r.below(6));
  for (auto& m : msgs) {
    m.role = r.below(4) ? roles[r.below(4)] : r.pick(roles);
    m.content = r.below(3) ? mutate("Tell me about the sea.", r, true) : r.pick(boundary_texts());
  }
  return msgs;
}

bool is_template_error(const std::runtime_error& e) {
  const std::string w = e.what();
  return typeid(e) == typeid(std::runtime_error) &&
         (w.rfind("chat template ", 0) == 0 || w.rfind("unknown chat template", 0) == 0);
}

}  // namespace

TEST_CASE("mutated SmolLM2 chat templates render or raise a chat-template error", "[chat][fuzz]") {
  const std::string real = real_template();
  REQUIRE(detect_chat_template(real) == chat_template_kind::chatml);
  rng r(0x6a696e6a);
  tally t;
  const std::vector<chat_message> conversation = {{"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}};
  for (int c = 0; c < 1500; ++c) {
    const std::string jinja = mutate(real, r, true);
    expect_clear<std::runtime_error>(
        t, "case " + std::to_string(c) + ":\n" + jinja,
        [&] {
          detect_chat_template(jinja);
          const std::string out = apply_chat_template(chatml_tokens(jinja), conversation, true);
          CHECK(out.find("Bye") != std::string::npos);
        },
        is_template_error);
  }
  INFO("rendered " << t.parsed << ", rejected " << t.rejected);
  CHECK(t.parsed + t.rejected == 1500);
  CHECK(t.parsed > 500);  // the family is recognised by its markers: most edits keep them
  CHECK(t.rejected > 50);
}

TEST_CASE("random conversations render through SmolLM2's template or raise a chat-template error",
          "[chat][fuzz]") {
  const tokenizer_data tok = chatml_tokens(real_template());
  rng r(0x6d736773);
  tally t;
  for (int c = 0; c < 1500; ++c) {
    const auto msgs = random_messages(r);
    std::string label = "case " + std::to_string(c) + ":";
    for (const auto& m : msgs) label += "\n  [" + m.role + "] " + m.content;
    expect_clear<std::runtime_error>(
        t, label, [&] { apply_chat_template(tok, msgs, r.below(2) == 0); }, is_template_error);
  }
  INFO("rendered " << t.parsed << ", rejected " << t.rejected);
  CHECK(t.parsed + t.rejected == 1500);
  CHECK(t.parsed > 500);
  CHECK(t.rejected > 50);
}
