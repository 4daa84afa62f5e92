#include <boost/program_options.hpp>
#include <iostream>

#include "runtime/text/chat_template.h"
#include "runtime/model/model.h"
#include "tools/cli/commands.h"

namespace po = boost::program_options;

namespace troupe::cli {

namespace {

std::string template_description(const tokenizer_data& t) {
  if (t.chat_template.empty()) return "none";
  try {
    return chat_template_name(detect_chat_template(t.chat_template));
  } catch (const std::exception& e) {
    return std::string("unsupported (") + e.what() + ")";
  }
}

void print_info(const loaded_model& m) {
  const auto& c = m.config;
  const auto& t = m.tokenizer;
  std::cout << "path:          " << m.path << "\n"
            << "format:        " << m.format << "\n"
            << "name:          " << c.name << "\n"
            << "architecture:  " << architecture_name(c.arch) << "\n"
            << "parameters:    " << m.n_params << "\n"
            << "layers:        " << c.n_layers << "\n"
            << "hidden:        " << c.hidden << "\n"
            << "heads:         " << c.n_heads << " (kv " << c.n_kv_heads << ", head_dim " << c.head_dim << ")\n"
            << "ffn:           " << c.ffn << "\n"
            << "vocab:         " << c.vocab << "\n"
            << "context:       " << c.max_context << "\n"
            << "rope theta:    " << c.rope_theta
            << (c.scaling.type == rope_scaling::kind::llama3 ? " (llama3 scaling)" : "") << "\n"
            << "rms eps:       " << c.rms_eps << "\n"
            << "tied embed:    " << (c.tied_embeddings ? "yes" : "no") << "\n"
            << "tensor types: ";
  for (const auto& [type, n] : m.tensor_types) std::cout << " " << type << "=" << n;
  std::cout << "\n"
            << "tokenizer:     " << (t.kind == tokenizer_kind::bpe ? "byte-level BPE" : "SentencePiece BPE")
            << " (pre '" << t.pre << "', " << t.tokens.size() << " tokens, " << t.merges.size()
            << " merges, bos " << t.bos_id << ", eos " << t.eos_id << ", add_bos "
            << (t.add_bos ? "yes" : "no") << ")\n"
            << "chat template: " << template_description(t) << "\n";
}

}  // namespace

int run_info(const std::vector<std::string>& args) {
  std::string model_path;
  po::options_description opts("troupe info: describe a model\n\noptions");
  opts.add_options()("help,h", "show this help")(
      "model,m", po::value(&model_path)->required(),
      "model: a .gguf file, a Hugging Face directory, or 'default'");
  po::variables_map vm;
  if (!parse_command_line(args, opts, vm)) return 0;
  print_info(load_model_metadata(resolve_model_path(model_path)));
  return 0;
}

}  // namespace troupe::cli
