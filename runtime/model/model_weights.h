#pragma once
/// Weights of a decoder-only transformer in the compute type (f32 on the CPU).
///
/// Layout convention (whatever the file format): every linear weight is
/// [out_features, in_features] row-major, and the rows of wq / wk are in the
/// Hugging Face order, i.e. RoPE rotates dimension i with i + head_dim/2 (NeoX
/// "rotate_half"). GGUF files of the `llama` architecture store wq / wk permuted
/// for interleaved RoPE; the loader undoes that permutation.
#include <vector>

#include "kernels/base/tensor.h"

namespace troupe {

/// One transformer block. Under tensor parallelism a layer holds its rank's slice
/// (model_loader.h, `slice`): the head and MLP sizes below are then the local ones.
struct layer_weights {
  tensor attn_norm;  // [hidden]
  tensor wq;         // [n_heads * head_dim, hidden]
  tensor wk;         // [n_kv_heads * head_dim, hidden]
  tensor wv;         // [n_kv_heads * head_dim, hidden]
  tensor bq;         // [n_heads * head_dim] or empty
  tensor bk;         // [n_kv_heads * head_dim] or empty
  tensor bv;         // [n_kv_heads * head_dim] or empty
  tensor wo;         // [hidden, n_heads * head_dim]
  tensor ffn_norm;   // [hidden]
  tensor w_gate;     // [ffn, hidden]
  tensor w_up;       // [ffn, hidden]
  tensor w_down;     // [hidden, ffn]
  // On a GPU the model fuses the projections that read the same input (model::model): wq,
  // wk, wv (and their biases) become wqkv / bqkv, w_gate and w_up become w_gate_up, and the
  // separate tensors are then empty. Per tensor rank: each rank stacks its own slices.
  tensor wqkv;       // [(n_heads + 2 n_kv_heads) * head_dim, hidden]: wq, wk, wv rows in that order
  tensor bqkv;       // [(n_heads + 2 n_kv_heads) * head_dim] or empty
  tensor w_gate_up;  // [2 ffn, hidden]: w_gate rows, then w_up rows
  int q_rows = 0;    // rows of wq (also when fused)
  int kv_rows = 0;   // rows of wk and of wv
  int ffn_rows = 0;  // rows of w_gate and of w_up
};

/// All weights of one model (or of one shard's slice of it).
struct model_weights {
  tensor tok_embd;                    // [vocab, hidden]
  std::vector<layer_weights> layers;  // n_layers entries (empty tensors outside a shard's range)
  tensor out_norm;                    // [hidden]
  tensor output;                      // [vocab, hidden], empty when embeddings are tied
};

}  // namespace troupe
