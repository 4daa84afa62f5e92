#pragma once
/// Loads a model (GGUF file or Hugging Face directory) into the compute type.
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "parallel/partition.h"
#include "kernels/base/device.h"
#include "runtime/model/model_config.h"
#include "runtime/model/model_weights.h"
#include "runtime/text/tokenizer_data.h"

namespace troupe {

/// Which part of the model to materialize (a pipeline stage loads only its layers, a
/// tensor-parallel rank only its heads and MLP columns of them).
struct load_options {
  int layer_begin = 0;    ///< first layer to load
  int layer_end = -1;     ///< one past the last layer; -1 = all
  bool load_embeddings = true;  ///< tok_embd (first stage, and the last when tied)
  bool load_head = true;        ///< out_norm + output (last stage)
  int tp_rank = 0;              ///< this rank of the tensor-parallel group
  int tp_size = 1;              ///< ranks in the tensor-parallel group (1 = whole layers)
  bool allow_uneven_heads = false;  ///< allow a tp_size that does not divide the heads (see plan_tensor)
  device_ref device;            ///< where the weights go (the CPU: host memory)
  dtype weight_type = dtype::f32;  ///< their element type there (f32 on the CPU; bf16 or f16 on CUDA)
  /// The `random` load format (vLLM's dummy weights): shapes from config.json alone (plus
  /// tokenizer.json), values from kernels::fill_random made on the device itself, so
  /// shapes too large to write to disk can be run. Norm weights are 1.
  bool random_weights = false;
  uint64_t random_seed = 0;     ///< seed of the random weights
  /// Called with progress lines ("weights 40% (3.2 GB)") while weights are placed.
  std::function<void(const std::string&)> progress;
};

/// A model as read from disk, weights dequantized to f32 on the host. With tp_size > 1 each
/// layer holds only the rank's slice (see `slice`): wq/wk/wv/bq/bk/bv the rows of its query
/// and kv heads, wo [hidden, slice.n_heads * head_dim], w_gate/w_up [slice.ffn_size, hidden],
/// w_down [hidden, slice.ffn_size]; norms, embeddings and output stay whole.
struct loaded_model {
  model_config config;                        ///< the FULL model's config, whatever the slice
  parallel::tensor_slice slice;               ///< what the layers hold (rank 0 of 1 = everything)
  model_weights weights;
  tokenizer_data tokenizer;
  std::string format;                         ///< "gguf" or "safetensors"
  std::string path;                           ///< the file or directory loaded
  std::map<std::string, int> tensor_types;    ///< stored type name -> tensor count ("Q4_1": 210, ...)
  int64_t n_params = 0;                       ///< parameters in the file
  device_ref device;                          ///< where the weights live
};

/// Moves every weight of `m` to `device` as `type` (from host f32), in chunks through
/// pinned staging memory, freeing the host copy tensor by tensor. No-op when they are
/// already there in that type.
void place_weights(loaded_model& m, const device_ref& device, dtype type,
                   const std::function<void(const std::string&)>& progress = {});

/// Fills `m.weights` (config and slice already set) with the random weights `opt` asks
/// for, made directly on opt.device.
void make_random_weights(loaded_model& m, const load_options& opt);

/// Loads `path`: a .gguf file, or a directory with config.json + *.safetensors
/// (+ model.safetensors.index.json) + tokenizer.json (+ tokenizer_config.json).
/// Throws troupe::load_error naming the file, the key or tensor, and the problem.
loaded_model load_model(const std::string& path, const load_options& opt = {});

/// Reads only the config and tokenizer (no weights).
loaded_model load_model_metadata(const std::string& path);

/// Error raised for a malformed, truncated or unsupported model.
struct load_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace troupe
