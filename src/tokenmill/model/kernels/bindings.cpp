// One extension module for every tokenmill CPU kernel.
//
// Every file that needs torch's headers is compiled here, in one translation unit:
// those headers cost ~30 s of compile time per unit, which is most of the build. The
// instruction-set kernels (quant_scalar/avx2/avx512.cpp) are separate units that never
// include torch.
#include <torch/extension.h>

#include "int8_linear.cpp"
#include "paged_attention.cpp"
#include "quant_ops.cpp"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "paged decode attention from the KV cache");
  m.def("int8_linear", &int8_linear, "per-row W8A8 linear on the int8 GEMM");
  m.def("quant_matmul_out", &quant_matmul_out, "out = x @ W^T, W in GGUF blocks",
        py::arg("out"), py::arg("x"), py::arg("w"), py::arg("type"), py::arg("method") = "",
        py::arg("variant") = "");
  m.def("quant_matmul", &quant_matmul, "x @ W^T, W in GGUF blocks", py::arg("x"), py::arg("w"),
        py::arg("type"), py::arg("method") = "", py::arg("variant") = "");
  m.def("quant_rows", &quant_rows, "rows of W in GGUF blocks, dequantized", py::arg("w"),
        py::arg("type"), py::arg("K"), py::arg("ids"), py::arg("variant") = "");
  m.def("quant_variants", &quant_variants, "instruction sets this CPU runs, fastest first");
  m.def("select_quant_variant", &select_quant_variant, "the variant used when none is named");
  m.def("cpu_features", &cpu_features, "the CPU's vector extensions");
}
