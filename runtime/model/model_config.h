#pragma once
/// Hyper-parameters of a decoder-only transformer, independent of file format.
#include <cstdint>
#include <string>

#include "kernels/rope.h"
#include "parallel/partition.h"

namespace troupe {

/// Architectures the forward implements.
enum class architecture : uint8_t {
  llama,  ///< Llama 2/3, Mistral, SmolLM2, DeepSeek-R1-Distill-Llama
  qwen2,  ///< Qwen2/2.5, DeepSeek-R1-Distill-Qwen (q/k/v biases)
};

/// Lower-case name ("llama", "qwen2").
const char* architecture_name(architecture a);

/// RoPE frequency scaling: the rope op's own parameters (kernels/rope.h).
using rope_scaling = kernels::rope_scaling;

/// Everything the forward needs to know about a model's shape.
struct model_config : model_shape {
  architecture arch = architecture::llama;
  int max_context = 0;   ///< trained context length
  float rope_theta = 10000.0f;
  float rms_eps = 1e-5f;
  rope_scaling scaling;
  bool tied_embeddings = false;  ///< output projection reuses token embeddings

  /// Throws std::runtime_error naming the first inconsistent field.
  void validate() const;
};

}  // namespace troupe
