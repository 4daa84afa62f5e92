#include <boost/program_options.hpp>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>
#include <unordered_map>

#include "actors/actor_system_config.h"
#include "actors/client.h"
#include "actors/cluster/launch.h"
#include "actors/cluster/placement.h"
#include "actors/cluster/supervisor.h"
#include "runtime/text/chat_template.h"
#include "runtime/engine/engine.h"
#include "tools/cli/cluster_checks.h"
#include "tools/cli/commands.h"
#include "tools/cli/tls_flags.h"

namespace po = boost::program_options;

namespace troupe::cli {

namespace {

struct generate_options {
  std::string model = "default";
  std::string config;
  std::string head;
  tls_flags tls;
  std::vector<std::string> overrides;
  std::string prompt;
  std::string prompt_file;
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
      ("head", po::value(&o.head),
       "send the request to the running cluster whose head (troupe serve) listens on HOST:PORT\n"
       "(several heads: HOST:PORT,HOST:PORT,... tried in turn, and followed, until one leads);\n"
       "--model names the tokenizer's model (the cluster's); a TLS cluster needs --ca, --cert, --key")
      ("prompt,p", po::value(&o.prompt), "the prompt text")
      ("prompt-file", po::value(&o.prompt_file),
       "many prompts, run together: a JSON-lines file, one {\"prompt\": \"...\"} (or one JSON string)\n"
       "per line; answers are printed in file order (with --output json, one object per line)")
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
  add_tls_flags(d, o.tls);
  return d;
}

std::vector<int32_t> encode_prompt(const model& m, const generate_options& o, const std::string& text) {
  const auto& tok = m.tokenizer();
  if (!o.chat) {
    if (!o.system.empty()) throw usage_error("--system needs --chat");
    return tok.encode(text, true, true);
  }
  std::vector<chat_message> msgs;
  if (!o.system.empty()) msgs.push_back({"system", o.system});
  msgs.push_back({"user", text});
  return tok.encode(apply_chat_template(tok.data(), msgs, true), true, true);
}

/// The prompt texts: --prompt, or every line of --prompt-file (errors name file and line).
std::vector<std::string> prompt_texts(const generate_options& o) {
  if (o.prompt_file.empty()) return {o.prompt};
  std::ifstream in(o.prompt_file);
  if (!in) throw usage_error("--prompt-file: cannot open '" + o.prompt_file + "'");
  std::vector<std::string> texts;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto where = o.prompt_file + ":" + std::to_string(n);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw usage_error(where + ": not JSON: " + e.what());
    }
    if (j.is_object() && j.contains("prompt")) j = j["prompt"];
    if (!j.is_string()) throw usage_error(where + ": expected a JSON string or an object with a string \"prompt\"");
    texts.push_back(j.get<std::string>());
  }
  if (texts.empty()) throw usage_error("--prompt-file: '" + o.prompt_file + "' has no prompts");
  return texts;
}

/// Every prompt, tokenized.
std::vector<std::vector<int32_t>> encode_prompts(const model& m, const generate_options& o) {
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& text : prompt_texts(o)) prompts.push_back(encode_prompt(m, o, text));
  return prompts;
}

/// What came back for the request, and how to print it.
struct generated {
  std::vector<int32_t> tokens;
  std::string text;
  std::string finish_reason;

  bool stream = true;        ///< print text as it arrives (one prompt, --output text)

  void add(const generate_options& o, int32_t token, const std::string& delta, const std::string& why) {
    if (token >= 0) tokens.push_back(token);
    text += delta;
    if (o.output == "text" && stream) std::cout << delta << std::flush;
    if (!why.empty()) finish_reason = why;
  }
  nlohmann::json replicas;  ///< per replica: its step counters (--config runs only)

  void print(const generate_options& o, const std::vector<int32_t>& prompt) const {
    if (o.output == "text") {
      std::cout << (stream ? "" : text) << "\n";
      return;
    }
    nlohmann::json j = {{"prompt_tokens", prompt}, {"tokens", tokens}, {"text", text},
                        {"finish_reason", finish_reason}};
    if (!replicas.is_null()) j["replicas"] = replicas;
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
};

/// Sends every prompt from `self` to `router` (request i + 1 = prompt i).
void send_prompts(caf::scoped_actor& self, const caf::actor& router, const generate_options& o,
                  const std::vector<std::vector<int32_t>>& prompts) {
  for (size_t i = 0; i < prompts.size(); ++i)
    self->send(router, generate_atom::value, uint64_t{i + 1}, generate_request{prompts[i], o.sampling},
               caf::actor_cast<caf::actor>(self));
}

/// Receives the token events of the requests sent by send_prompts until all finish and
/// adds them to `gs` (one per prompt). Returns "" or why a request failed. `stop` ends
/// the wait early; a down_msg (the router's node was lost, when monitored) names `peer`.
std::string receive_answers(caf::scoped_actor& self, const generate_options& o, std::vector<generated>& gs,
                            const std::function<bool()>& stop, const std::string& peer) {
  const auto idle_limit = std::chrono::seconds(60);
  auto last_event = std::chrono::steady_clock::now();
  std::string error;
  size_t open = gs.size();
  bool done = false;
  while (!done && !stop()) {
    self->receive(
        [&](token_atom, token_msg& m) {
          last_event = std::chrono::steady_clock::now();
          if (m.request < 1 || m.request > gs.size()) return;
          if (m.finish_reason == "error") error = m.error;
          gs[m.request - 1].add(o, m.token, m.text, m.finished ? m.finish_reason : "");
          if (m.finished) done = --open == 0 || !error.empty();
        },
        [&](caf::down_msg& dm) {
          error = "lost " + peer + " while generating: " + self->system().render(dm.reason);
          done = true;
        },
        caf::after(std::chrono::milliseconds(200)) >> [&] {
          if (std::chrono::steady_clock::now() - last_event < idle_limit) return;
          error = "no answer from " + peer + " in 60 s";
          done = true;
        });
  }
  return error;
}

/// One empty answer per prompt; text streams only when there is one prompt.
std::vector<generated> answers_for(const std::vector<std::vector<int32_t>>& prompts) {
  std::vector<generated> gs(prompts.size());
  for (auto& g : gs) g.stream = prompts.size() == 1;
  return gs;
}

/// Prints every answer in prompt order.
void print_all(const generate_options& o, const std::vector<generated>& gs,
               const std::vector<std::vector<int32_t>>& prompts) {
  for (size_t i = 0; i < gs.size(); ++i) gs[i].print(o, prompts[i]);
}

/// Each replica's step counters as JSON (the runtime-overhead benchmark reads them).
nlohmann::json replica_counters(caf::scoped_actor& self, const std::vector<replica_actor>& replicas) {
  auto out = nlohmann::json::array();
  for (const auto& r : replicas)
    self->request(r, std::chrono::seconds(5), status_atom::value)
        .receive(
            [&](const replica_status& s) {
              out.push_back({{"index", s.index}, {"steps", s.steps}, {"failures", s.failures},
                             {"decode_steps", s.decode_steps}, {"decode_wall_us", s.decode_wall_us},
                             {"decode_kernel_us", s.decode_kernel_us}, {"decode_busy_us", s.decode_busy_us},
                             {"step_messages", s.step_messages}});
            },
            [&](caf::error&) { out.push_back(nullptr); });
  return out;
}

/// Starts the cluster of `o.config` with this process as its head, sends the request
/// through a replica, prints the answer and stops the cluster. The partition is checked
/// against the model before any process starts.
int generate_on_cluster(const generate_options& o) {
  head_options h;
  h.config = load_cluster(o.config, o.overrides);
  h.config_path = o.config;
  h.overrides = o.overrides;
  auto meta = load_checked_metadata(h.config);
  auto prompts = encode_prompts(*meta, o);
  h.main = [&o, meta, prompts, cfg = h.config](head_context& ctx) -> std::optional<int> {
    wait_for_registration(ctx.system, ctx.supervisor, cfg, cfg.fault_tolerance.request_wait, ctx.stopping);
    auto plane = bring_up_replicas(ctx.system, ctx.supervisor, cfg, meta, std::chrono::minutes(5), ctx.stopping,
                                   nullptr, {ctx.restored, ctx.recorder});
    for (auto& a : plane.actors()) ctx.keep_alive.push_back(a);
    caf::scoped_actor self{ctx.system};
    send_prompts(self, caf::actor_cast<caf::actor>(plane.router), o, prompts);
    auto gs = answers_for(prompts);
    auto error = receive_answers(self, o, gs, [&ctx] { return ctx.stopping.load(); }, "the replica");
    if (!error.empty()) throw std::runtime_error(error);
    gs.back().replicas = replica_counters(self, plane.replicas);
    print_all(o, gs, prompts);
    return 0;
  };
  return run_head(h);
}

/// A parsed --head value.
struct head_address {
  std::string host;
  uint16_t port = 0;
};

/// "HOST:PORT" ("[::1]:7100" for IPv6); throws usage_error naming the value otherwise.
head_address parse_head(const std::string& text) {
  const auto bad = [&text](const std::string& why) {
    return usage_error("--head must be HOST:PORT (e.g. 127.0.0.1:7100), got '" + text + "': " + why);
  };
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) throw bad("no ':' before the port");
  head_address a;
  a.host = text.substr(0, colon);
  if (a.host.size() >= 2 && a.host.front() == '[' && a.host.back() == ']') a.host = a.host.substr(1, a.host.size() - 2);
  if (a.host.empty()) throw bad("the host is empty");
  const auto port = text.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
    throw bad("the port '" + port + "' is not a number");
  const long value = std::stol(port);
  if (value < 1 || value > 65535) throw bad("the port " + port + " is not in 1..65535");
  a.port = static_cast<uint16_t>(value);
  return a;
}

/// Sends the request to the running cluster at `o.head` (troupe serve) and prints the
/// answer. The prompt is tokenized here with `o.model`'s tokenizer.
int generate_on_head(const generate_options& o) {
  if (!o.config.empty()) throw usage_error("--head and --config cannot be combined");
  if (!o.overrides.empty()) throw usage_error("--set needs --config");
  std::vector<head_address> addresses;
  for (std::size_t at = 0; at <= o.head.size();) {
    const auto comma = std::min(o.head.find(',', at), o.head.size());
    addresses.push_back(parse_head(o.head.substr(at, comma - at)));
    at = comma + 1;
  }
  const auto& address = addresses.front();
  const auto where = addresses.size() == 1 ? endpoint(address.host, address.port) : "heads " + o.head;
  auto meta = model::load_metadata(o.model);
  auto prompts = encode_prompts(*meta, o);
  // Default heartbeats (the head drops silent peers), but a lenient connection timeout:
  // the head's heartbeat interval may be longer than the default timeout; a head that
  // stops answering is caught by receive_answers' idle limit.
  fault_tolerance_section ft;
  ft.heartbeat_timeout = std::chrono::seconds(30);
  system_config cfg(ft, 2);
  use_tls(cfg, identity_of(o.tls));
  caf::actor_system sys{cfg};
  client_options co;
  co.host = address.host;
  co.port = address.port;
  for (std::size_t i = 1; i < addresses.size(); ++i) co.other_heads.emplace_back(addresses[i].host, addresses[i].port);
  // Through a client actor that follows the head: when the head process dies, it reconnects
  // (a restarted or standby head) and resumes every unfinished request after the tokens
  // already received (client_options::failover).
  const auto found = connect_to_leader(sys, co);
  auto client = caf::actor_cast<caf::actor>(spawn_client(sys, found.router, co, found.term));
  struct stop_client {  // on every way out: the actor system waits for its actors
    caf::actor a;
    ~stop_client() { caf::anon_send_exit(a, caf::exit_reason::user_shutdown); }
  } stop{client};
  caf::scoped_actor self{sys};
  self->monitor(client);
  send_prompts(self, client, o, prompts);
  auto gs = answers_for(prompts);
  auto error = receive_answers(self, o, gs, [] { return false; }, addresses.size() == 1 ? "the head at " + where : where);
  if (!error.empty()) throw std::runtime_error(error);
  print_all(o, gs, prompts);
  return 0;
}

}  // namespace

int run_generate(const std::vector<std::string>& args) {
  generate_options o;
  auto desc = describe(o);
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm)) return 0;
  if (o.output != "text" && o.output != "json")
    throw usage_error("--output must be 'text' or 'json', got '" + o.output + "'");
  if (o.threads < 0) throw usage_error("--threads must be >= 0");
  if (o.kv_tokens < 16) throw usage_error("--kv-tokens must be at least 16");
  try {
    validate(o.sampling);
  } catch (const std::invalid_argument& e) {
    throw usage_error(e.what());
  }

  if (vm.count("prompt") == vm.count("prompt-file"))
    throw usage_error("give the prompt with exactly one of --prompt and --prompt-file");
  if (vm.count("head")) return generate_on_head(o);
  if (!o.config.empty()) return generate_on_cluster(o);
  auto m = model::load(o.model);
  engine_config cfg;
  cfg.n_threads = o.threads;
  cfg.kv_tokens = o.kv_tokens;
  engine eng(m, cfg);
  auto prompts = encode_prompts(*m, o);
  std::unordered_map<seq_id, size_t> index;
  for (size_t i = 0; i < prompts.size(); ++i) {
    try {
      index[eng.submit(prompts[i], o.sampling)] = i;
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(e.what());
    }
  }
  auto gs = answers_for(prompts);
  while (eng.has_work()) {
    for (auto& ev : eng.step()) {
      auto it = index.find(ev.id);
      if (it == index.end()) continue;
      gs[it->second].add(o, ev.token, ev.text, ev.finished ? finish_reason_name(ev.reason) : "");
    }
  }
  print_all(o, gs, prompts);
  return 0;
}

}  // namespace troupe::cli
