#include "runtime/model/model_config.h"

#include <stdexcept>
#include <string>

namespace troupe {

const char* architecture_name(architecture a) {
  switch (a) {
    case architecture::llama: return "llama";
    case architecture::qwen2: return "qwen2";
  }
  return "?";
}

namespace {
void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("model config: " + what);
}
}  // namespace

void model_config::validate() const {
  require(n_layers > 0, "n_layers must be positive, got " + std::to_string(n_layers));
  require(hidden > 0, "hidden size must be positive, got " + std::to_string(hidden));
  require(n_heads > 0, "head count must be positive, got " + std::to_string(n_heads));
  require(n_kv_heads > 0 && n_heads % n_kv_heads == 0,
          "kv head count " + std::to_string(n_kv_heads) + " must divide head count " +
              std::to_string(n_heads));
  require(head_dim > 0 && head_dim % 2 == 0,
          "head_dim must be positive and even, got " + std::to_string(head_dim));
  require(ffn > 0, "ffn size must be positive, got " + std::to_string(ffn));
  require(vocab > 0, "vocab size must be positive, got " + std::to_string(vocab));
  require(max_context > 0, "context length must be positive, got " + std::to_string(max_context));
  require(rope_theta > 0, "rope theta must be positive");
  require(rms_eps > 0, "rms epsilon must be positive");
}

}  // namespace troupe
