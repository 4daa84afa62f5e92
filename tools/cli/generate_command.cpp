#include <boost/program_options.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "runtime/chat_template.h"
#include "runtime/engine.h"
#include "tools/cli/commands.h"

namespace po = boost::program_options;

namespace troupe::cli {

namespace {

struct generate_options {
  std::string model = "default";
  std::string prompt;
  std::string system;
  bool chat = false;
  std::string output = "text";
  int threads = 0;
  int kv_tokens = 8192;
  sampling_params sampling;
};

po::options_description describe(generate_options& o) {
  auto& s = o.sampling;
  s.temperature = 0.2f;
  s.top_p = 0.9f;
  s.max_tokens = 256;
  po::options_description d("troupe generate: generate text from a prompt\n\noptions");
  d.add_options()
      ("help,h", "show this help")
      ("model,m", po::value(&o.model)->default_value(o.model),
       "model: a .gguf file, a Hugging Face directory, or 'default' (SmolLM2-135M-Instruct)")
      ("prompt,p", po::value(&o.prompt)->required(), "the prompt text")
      ("chat", po::bool_switch(&o.chat), "wrap the prompt as a user message in the model's chat template")
      ("system", po::value(&o.system), "system message (with --chat)")
      ("max-tokens,n", po::value(&s.max_tokens)->default_value(s.max_tokens), "tokens to generate at most")
      ("temperature,t", po::value(&s.temperature)->default_value(s.temperature, "0.2"), "sampling temperature; 0 = greedy")
      ("top-p", po::value(&s.top_p)->default_value(s.top_p, "0.9"), "nucleus sampling mass, (0, 1]")
      ("top-k", po::value(&s.top_k)->default_value(s.top_k), "keep the k most likely tokens; 0 = off")
      ("min-p", po::value(&s.min_p)->default_value(s.min_p), "drop tokens below min-p times the top probability")
      ("repetition-penalty", po::value(&s.repetition_penalty)->default_value(s.repetition_penalty), "penalty for tokens already seen, > 0 (1 = off)")
      ("frequency-penalty", po::value(&s.frequency_penalty)->default_value(s.frequency_penalty), "OpenAI frequency penalty, [-2, 2]")
      ("presence-penalty", po::value(&s.presence_penalty)->default_value(s.presence_penalty), "OpenAI presence penalty, [-2, 2]")
      ("seed,s", po::value(&s.seed)->default_value(s.seed), "sampling seed (same seed, same text)")
      ("stop", po::value(&s.stop)->composing(), "stop string (repeatable)")
      ("ignore-eos", po::bool_switch(&s.ignore_eos), "keep generating past end-of-sequence tokens")
      ("output,o", po::value(&o.output)->default_value(o.output), "text (streamed) or json (one object at the end)")
      ("threads", po::value(&o.threads)->default_value(o.threads), "CPU threads; 0 = all cores")
      ("kv-tokens", po::value(&o.kv_tokens)->default_value(o.kv_tokens), "KV cache capacity in tokens");
  return d;
}

std::vector<int32_t> encode_prompt(const model& m, const generate_options& o) {
  const auto& tok = m.tokenizer();
  if (!o.chat) {
    if (!o.system.empty()) throw usage_error("--system needs --chat");
    return tok.encode(o.prompt, true, true);
  }
  std::vector<chat_message> msgs;
  if (!o.system.empty()) msgs.push_back({"system", o.system});
  msgs.push_back({"user", o.prompt});
  return tok.encode(apply_chat_template(tok.data(), msgs, true), true, true);
}

}  // namespace

int run_generate(const std::vector<std::string>& args) {
  generate_options o;
  auto desc = describe(o);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  po::notify(vm);
  if (o.output != "text" && o.output != "json")
    throw usage_error("--output must be 'text' or 'json', got '" + o.output + "'");
  if (o.threads < 0) throw usage_error("--threads must be >= 0");
  if (o.kv_tokens < 16) throw usage_error("--kv-tokens must be at least 16");
  try {
    validate(o.sampling);
  } catch (const std::invalid_argument& e) {
    throw usage_error(e.what());
  }

  auto m = model::load(o.model);
  engine_config cfg;
  cfg.n_threads = o.threads;
  cfg.kv_tokens = o.kv_tokens;
  engine eng(m, cfg);
  auto prompt = encode_prompt(*m, o);
  nlohmann::json result = {{"prompt_tokens", prompt}};
  seq_id id;
  try {
    id = eng.submit(prompt, o.sampling);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(e.what());
  }
  std::vector<int32_t> tokens;
  std::string text;
  finish_reason why = finish_reason::none;
  while (eng.has_work()) {
    for (auto& ev : eng.step()) {
      if (ev.id != id) continue;
      if (ev.token >= 0) tokens.push_back(ev.token);
      text += ev.text;
      if (o.output == "text") std::cout << ev.text << std::flush;
      if (ev.finished) why = ev.reason;
    }
  }
  if (o.output == "text") {
    std::cout << "\n";
  } else {
    result["tokens"] = tokens;
    result["text"] = text;
    result["finish_reason"] = finish_reason_name(why);
    std::cout << result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  return 0;
}

}  // namespace troupe::cli
