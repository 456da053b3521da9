// One extension module for every tokenmill CPU kernel.
#include <torch/extension.h>

torch::Tensor decode_attention(torch::Tensor q, torch::Tensor kv_cache, torch::Tensor slots,
                               torch::Tensor lens, double scale, int64_t window);
torch::Tensor int8_linear(torch::Tensor x, torch::Tensor qweight, torch::Tensor scale,
                          c10::optional<torch::Tensor> bias);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "paged decode attention from the KV cache",
        pybind11::arg("q"), pybind11::arg("kv_cache"), pybind11::arg("slots"),
        pybind11::arg("lens"), pybind11::arg("scale"), pybind11::arg("window") = 0);
  m.def("int8_linear", &int8_linear, "per-row W8A8 linear on the int8 GEMM");
}
