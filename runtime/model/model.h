#pragma once
/// The immutable, shareable half of llama.cpp's model/context split: config,
/// weights on one device and the constants derived from them. Many shard contexts
/// (and threads) may run the same model at once.
#include <memory>
#include <string>

#include "kernels/base/device.h"
#include "runtime/model/model_loader.h"
#include "runtime/text/tokenizer.h"

namespace troupe {

class model {
 public:
  /// Loads `path` ("default" = the default model in the cache) onto the host.
  static std::shared_ptr<const model> load(const std::string& path, const load_options& opt = {});
  /// Loads config and tokenizer only, no layers (a head's replica needs no weights).
  static std::shared_ptr<const model> load_metadata(const std::string& path);
  explicit model(loaded_model&& m);
  model(const model&) = delete;
  model& operator=(const model&) = delete;

  const model_config& config() const { return loaded_.config; }
  const model_weights& weights() const { return loaded_.weights; }
  const loaded_model& source() const { return loaded_; }
  const troupe::tokenizer& tokenizer() const { return tokenizer_; }
  /// The output projection: `output`, or the token embeddings when tied.
  const tensor& output_weight() const;
  const tensor& rope_inv_freq() const { return rope_inv_freq_; }  // [head_dim / 2]
  /// Where the weights live.
  const device_ref& device() const { return loaded_.device; }
  /// The element type of the layer weights (the activations' type in the forward).
  dtype weight_type() const;
  /// The tensor-parallel slice the layers hold (rank 0 of 1: the whole model).
  const parallel::tensor_slice& slice() const { return loaded_.slice; }
  int layer_begin() const { return layer_begin_; }
  int layer_end() const { return layer_end_; }

 private:
  /// GPU: stacks each layer's q/k/v and gate/up weights into one tensor each (see
  /// layer_weights) so that each pair of projections is one matmul.
  void fuse_projections(const device_stream& s);

  loaded_model loaded_;
  troupe::tokenizer tokenizer_;
  tensor rope_inv_freq_;  // [head_dim / 2]
  int layer_begin_ = 0;
  int layer_end_ = 0;
};

/// Resolves "default" to the cached default model path ($TROUPE_CACHE or
/// ~/.cache/troupe, models/SmolLM2-135M-Instruct.Q4_1.gguf); other paths pass through.
/// Throws std::runtime_error saying how to fetch the default model when it is missing.
std::string resolve_model_path(const std::string& path);

}  // namespace troupe
