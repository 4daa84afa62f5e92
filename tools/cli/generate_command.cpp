#include <boost/program_options.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "actors/launch.h"
#include "actors/placement.h"
#include "runtime/chat_template.h"
#include "runtime/engine.h"
#include "tools/cli/commands.h"

namespace po = boost::program_options;

namespace troupe::cli {

namespace {

struct generate_options {
  std::string model = "default";
  std::string config;
  std::vector<std::string> overrides;
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
      ("config,c", po::value(&o.config),
       "run through a cluster (router -> replica -> shards) started from this cluster file;\n"
       "the model comes from its model.path")
      ("set", po::value(&o.overrides)->composing(), "override a key of the cluster file (repeatable)")
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

/// What came back for the request, and how to print it.
struct generated {
  std::vector<int32_t> tokens;
  std::string text;
  std::string finish_reason;

  void add(const generate_options& o, int32_t token, const std::string& delta, const std::string& why) {
    if (token >= 0) tokens.push_back(token);
    text += delta;
    if (o.output == "text") std::cout << delta << std::flush;
    if (!why.empty()) finish_reason = why;
  }
  void print(const generate_options& o, const std::vector<int32_t>& prompt) const {
    if (o.output == "text") {
      std::cout << "\n";
      return;
    }
    nlohmann::json j = {{"prompt_tokens", prompt}, {"tokens", tokens}, {"text", text},
                        {"finish_reason", finish_reason}};
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
};

/// Starts the cluster of `o.config` with this process as its head, sends the request
/// through a replica, prints the answer and stops the cluster.
int generate_on_cluster(const generate_options& o) {
  head_options h;
  h.config = load_cluster(o.config, o.overrides);
  h.config_path = o.config;
  h.overrides = o.overrides;
  h.main = [&o, cfg = h.config](head_context& ctx) -> std::optional<int> {
    load_options meta_only;
    meta_only.layer_end = 0;
    meta_only.load_embeddings = false;
    meta_only.load_head = false;
    auto meta = model::load(cfg.model.path, meta_only);
    auto prompt = encode_prompt(*meta, o);
    auto plane = bring_up_replicas(ctx.system, ctx.supervisor, cfg, meta, std::chrono::minutes(5),
                                   ctx.stopping);
    for (auto& a : plane.actors()) ctx.keep_alive.push_back(a);
    caf::scoped_actor self{ctx.system};
    self->send(plane.router, generate_atom::value, uint64_t{1}, generate_request{prompt, o.sampling},
               caf::actor_cast<caf::actor>(self));
    generated g;
    std::string error;
    bool done = false;
    while (!done && !ctx.stopping) {
      self->receive(
          [&](token_atom, token_msg& m) {
            if (m.finish_reason == "error") error = m.error;
            g.add(o, m.token, m.text, m.finished ? m.finish_reason : "");
            done = m.finished;
          },
          caf::after(std::chrono::seconds(60)) >> [&] { error = "no answer from the replica in 60 s"; done = true; });
    }
    if (!error.empty()) throw std::runtime_error(error);
    g.print(o, prompt);
    return 0;
  };
  return run_head(h);
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

  if (!o.config.empty()) return generate_on_cluster(o);
  auto m = model::load(o.model);
  engine_config cfg;
  cfg.n_threads = o.threads;
  cfg.kv_tokens = o.kv_tokens;
  engine eng(m, cfg);
  auto prompt = encode_prompt(*m, o);
  seq_id id;
  try {
    id = eng.submit(prompt, o.sampling);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(e.what());
  }
  generated g;
  while (eng.has_work()) {
    for (auto& ev : eng.step()) {
      if (ev.id != id) continue;
      g.add(o, ev.token, ev.text, ev.finished ? finish_reason_name(ev.reason) : "");
    }
  }
  g.print(o, prompt);
  return 0;
}

}  // namespace troupe::cli
