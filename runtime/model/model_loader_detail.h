#pragma once
// Internal to runtime/model/: what the GGUF and Hugging Face loaders share (the layer
// slicing and checks) and their entry points. model_loader.h is the public interface.
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "kernels/base/dequant.h"
#include "runtime/model/generation_defaults.h"
#include "runtime/model/model_loader.h"

namespace troupe::loader_detail {

/// Resolves layer_end = -1 and checks the range against the model.
std::pair<int, int> layer_range(const load_options& opt, int n_layers, const std::string& path);

/// model_config::validate, its error prefixed with `path` as a load_error.
void validate_config(const model_config& c, const std::string& path);

/// A stored tensor seen as [rows, cols] (a vector is one row), rows contiguous.
struct stored_matrix {
  ggml_type type = ggml_type::f32;
  const uint8_t* data = nullptr;  ///< into the file map
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;           ///< stored bytes of one row
  std::string what;               ///< "<file>: tensor '<name>'", for messages
};

/// Format-specific lookup: the stored tensor `name`, checked to have shape `want`.
using matrix_source = std::function<stored_matrix(const std::string& name, const shape_t& want)>;

/// Tensor name suffixes of one layer in a file format (after "<prefix><layer>").
struct layer_tensor_names {
  const char *attn_norm, *wq, *wk, *wv, *bq, *bk, *bv, *wo, *ffn_norm, *gate, *up, *down;
};

/// Loads layer `i`'s share for tensor slice `s`: rows of the slice's query / kv heads and MLP
/// columns, columns of wo and w_down, whole norms. `permuted`: wq/wk (and bq/bk) are stored
/// permuted for interleaved RoPE (GGUF llama); whole heads are sliced, then un-permuted.
void load_layer(const matrix_source& src, const char* prefix, const layer_tensor_names& n, const model_config& c,
                const parallel::tensor_slice& s, bool permuted, int i, layer_weights& l);

/// The tensor slice `opt` asks for (everything when null); partition_error prefixed with
/// `path` when it cannot be made.
parallel::tensor_slice plan_slice(const model_config& c, const load_options* opt, const std::string& path);

/// Throws load_error "<file>: <key>: <reason>" for the first field of `g` out of its range;
/// `keys` names each field's key in the file (field -> key, e.g. "temperature" -> "general.sampling.temp").
void check_generation(const generation_defaults& g, const std::string& file,
                      const std::vector<std::pair<std::string, std::string>>& keys);

/// A .gguf file: config, tokenizer and (unless `opt` is null) the weights `opt` asks for.
loaded_model load_gguf(const std::string& path, const load_options* opt);

/// A Hugging Face directory: config.json, tokenizer.json and (unless `opt` is null) the
/// weights `opt` asks for from its safetensors.
loaded_model load_hf(const std::string& dir, const load_options* opt);

/// config.json of a Hugging Face directory.
model_config hf_config(const std::string& dir);

/// general.sampling.* of a .gguf file: its sampling defaults (none when absent).
generation_defaults gguf_generation(const std::string& path);

/// generation_config.json of a Hugging Face directory: its sampling defaults (none when absent).
generation_defaults hf_generation(const std::string& dir);

/// tokenizer.json (+ tokenizer_config.json) of a Hugging Face directory.
tokenizer_data hf_tokenizer(const std::string& dir);

}  // namespace troupe::loader_detail
