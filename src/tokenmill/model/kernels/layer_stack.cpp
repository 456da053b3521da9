// A Llama-family decoder stack for a decode-only step in one native call. Included by
// bindings.cpp.
//
// At batch 1 a decode step's arithmetic is small, and the Python around ~10 native
// calls per layer (module calls, views, argument checks) cost as much as the kernels.
// This runs the same calls, in the same order and on the same kernels, from C++: the
// result is the same bits as the layer-by-layer path (tests/model/test_decode_stack.py).
//
// weights: per layer, in order, input norm (D,) float32, qkv blocks, o blocks,
// post-attention norm (D,) float32, gate_up blocks, down blocks (6 per layer);
// types: per layer the GGUF type ids of qkv, o, gate_up, down (4 per layer).
#include <torch/extension.h>

#include <vector>

std::vector<torch::Tensor> llama_decode_stack(torch::Tensor x, std::vector<torch::Tensor> weights,
                                              std::vector<int64_t> types, torch::Tensor cos,
                                              torch::Tensor sin,
                                              std::vector<torch::Tensor> kv_caches,
                                              torch::Tensor slots, torch::Tensor block_tables,
                                              torch::Tensor lens, int64_t block_size,
                                              double scale, int64_t H, int64_t Hkv, double eps) {
  const size_t L = kv_caches.size();
  TORCH_CHECK(L > 0 && weights.size() == 6 * L && types.size() == 4 * L,
              "6 weights and 4 types per layer, one KV cache per layer");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32, "x: (T, D) float32");
  const int64_t T = x.size(0);
  torch::Tensor residual = x;
  torch::Tensor h = x;
  for (size_t i = 0; i < L; ++i) {
    const torch::Tensor* w = &weights[6 * i];
    const int64_t* ty = &types[4 * i];
    const int64_t D = kv_caches[i].size(3);
    // The first layer's residual is its input; later ones add the layer output into it.
    torch::Tensor n = i == 0 ? rms_norm(h, w[0], eps, c10::nullopt, "")
                             : rms_norm(h, w[0], eps, residual, "");
    torch::Tensor qkv = quant_matmul(n, w[1], ty[0], "", "");
    rope_write_kv(qkv, cos, sin, kv_caches[i], slots, H, Hkv, "");
    torch::Tensor q = qkv.narrow(1, 0, H * D).view({T, H, D});
    torch::Tensor a = decode_attention(q, kv_caches[i], block_tables, lens, block_size, scale,
                                       0, "");
    torch::Tensor o = quant_matmul(a.view({T, H * D}), w[2], ty[1], "", "");
    n = rms_norm(o, w[3], eps, residual, "");
    torch::Tensor gate_up = quant_matmul(n, w[4], ty[2], "", "");
    h = quant_matmul(silu_mul(gate_up, ""), w[5], ty[3], "", "");
  }
  return {h, residual};
}
