#pragma once
/// Hyper-parameters of a decoder-only transformer, independent of file format.
#include <cstdint>
#include <string>

namespace troupe {

/// Architectures the forward implements.
enum class architecture : uint8_t {
  llama,  ///< Llama 2/3, Mistral, SmolLM2, DeepSeek-R1-Distill-Llama
  qwen2,  ///< Qwen2/2.5, DeepSeek-R1-Distill-Qwen (q/k/v biases)
};

/// Lower-case name ("llama", "qwen2").
const char* architecture_name(architecture a);

/// RoPE frequency scaling.
struct rope_scaling {
  enum class kind : uint8_t { none, llama3 } type = kind::none;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position = 8192;
};

/// Everything the forward needs to know about a model's shape.
struct model_config {
  architecture arch = architecture::llama;
  std::string name;
  int n_layers = 0;
  int hidden = 0;        ///< d_model
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;      ///< usually hidden / n_heads
  int ffn = 0;           ///< MLP intermediate size
  int vocab = 0;
  int max_context = 0;   ///< trained context length
  float rope_theta = 10000.0f;
  float rms_eps = 1e-5f;
  rope_scaling scaling;
  bool tied_embeddings = false;  ///< output projection reuses token embeddings
  bool attn_bias = false;        ///< q/k/v projections have biases (qwen2)

  /// Throws std::runtime_error naming the first inconsistent field.
  void validate() const;
};

}  // namespace troupe
