/// Smallest use of the engine API: load the default model, chat, stream the answer.
///   build/bin/example_generate "What is the capital of France?"
#include <iostream>

#include "runtime/text/chat_template.h"
#include "runtime/engine/engine.h"

int main(int argc, char** argv) {
  const std::string question = argc > 1 ? argv[1] : "What is the capital of France?";
  try {
    auto m = troupe::model::load("default");
    troupe::engine eng(m, troupe::engine_config{});
    const auto& tok = m->tokenizer();
    auto text = troupe::apply_chat_template(tok.data(), {{"user", question}}, true);
    troupe::sampling_params p;
    p.temperature = 0.0f;
    p.max_tokens = 64;
    eng.submit(tok.encode(text, true, true), p);
    while (eng.has_work())
      for (const auto& ev : eng.step()) std::cout << ev.text << std::flush;
    std::cout << "\n";
  } catch (const std::exception& e) {
    std::cerr << "example_generate: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
