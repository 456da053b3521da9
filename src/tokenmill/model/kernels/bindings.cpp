// One extension module for every tokenmill CPU kernel.
#include <torch/extension.h>

torch::Tensor decode_attention(torch::Tensor q, torch::Tensor kv_cache, torch::Tensor slots,
                               torch::Tensor lens, double scale);
torch::Tensor int8_linear(torch::Tensor x, torch::Tensor qweight, torch::Tensor scale,
                          c10::optional<torch::Tensor> bias);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "paged decode attention from the KV cache");
  m.def("int8_linear", &int8_linear, "per-row W8A8 linear on the int8 GEMM");
}
