#pragma once
/// Partition plans: layers to pipeline stages, heads and MLP columns to tensor-parallel ranks.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace troupe {

/// The shape of a decoder-only transformer as far as partition plans need it (a model's
/// config, runtime/model/model_config.h, is one).
struct model_shape {
  std::string name;      ///< for messages
  int n_layers = 0;      ///< transformer blocks
  int hidden = 0;        ///< d_model
  int n_heads = 0;       ///< query heads
  int n_kv_heads = 0;    ///< key/value heads
  int head_dim = 0;      ///< usually hidden / n_heads
  int ffn = 0;           ///< MLP intermediate size
  int vocab = 0;         ///< vocabulary size
  bool attn_bias = false;  ///< q/k/v projections have biases (qwen2)
};

}  // namespace troupe

namespace troupe::parallel {

/// A plan that cannot be made for this model (the message names the numbers and the fix).
struct partition_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Layers [begin, end) of one pipeline stage.
struct layer_range {
  int begin = 0;  ///< first layer
  int end = 0;    ///< one past the last layer
  /// Number of layers.
  int size() const { return end - begin; }
};

/// Parameters of one transformer block of `c` (norms, attention with biases, MLP).
int64_t layer_params(const model_shape& c);

/// Layers to pipeline stages, balanced by parameter count: token embeddings weigh on the
/// first stage and the final norm + output projection (even when tied: it is computed there)
/// on the last. The plan minimizes the heaviest stage, then spreads the rest as evenly as it
/// can. `layers_per_stage`, when not empty, overrides (must have n_stages entries, each >= 1,
/// summing to n_layers). Throws partition_error when n_stages < 1 or > n_layers, or for a bad
/// override (the message names the problem).
std::vector<layer_range> plan_pipeline(const model_shape& c, int n_stages,
                                       const std::vector<int>& layers_per_stage = {});

/// What one tensor-parallel rank holds.
struct tensor_slice {
  int rank = 0;           ///< this rank
  int size = 1;           ///< ranks in the tensor-parallel group
  int head_begin = 0;     ///< first query head of this rank
  int n_heads = 0;        ///< query heads [head_begin, head_begin + n_heads)
  int kv_head_begin = 0;  ///< first kv head this rank stores
  int n_kv_heads = 0;     ///< kv heads this rank stores (replicated when shared)
  int kv_group = 1;       ///< query heads per kv head in the whole model (n_heads / n_kv_heads)
  int ffn_begin = 0;      ///< first MLP column
  int ffn_size = 0;       ///< MLP columns [ffn_begin, ffn_begin + ffn_size)
};

/// Splits heads, kv heads and MLP columns over `tp` ranks and returns rank `rank`'s share.
/// When tp divides n_heads (vLLM's rule) every rank gets n_heads / tp query heads; kv heads
/// are split when tp divides n_kv_heads, and when tp is a multiple of n_kv_heads each rank
/// keeps the one kv head its query heads use (replication). Otherwise (tp does not divide
/// n_heads, or the kv heads fit neither rule) a partition_error names the numbers unless
/// `allow_uneven`: then heads are split as evenly as possible in contiguous ranges (the first
/// ranks get one more) and each rank stores the contiguous range of kv heads its query heads
/// use (a kv head straddling two ranks is stored on both). MLP columns are split as evenly
/// as possible in contiguous ranges. Requires 1 <= tp <= n_heads, tp <= ffn, 0 <= rank < tp.
tensor_slice plan_tensor(const model_shape& c, int tp, int rank, bool allow_uneven = false);

}  // namespace troupe::parallel
