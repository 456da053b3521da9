// One extension module for every tokenmill CPU kernel.
//
// Every file that needs torch's headers is compiled here, in one translation unit:
// those headers cost ~30 s of compile time per unit, which is most of the build. The
// instruction-set kernels (quant_scalar.cpp, ops_scalar.cpp, isa_avx2.cpp,
// isa_avx512.cpp, isa_amx.cpp) are separate units that never include torch.
#include <torch/extension.h>

#include <string>
#include <vector>

#include "dispatch.cpp"
#include "int8_linear.cpp"
#include "layer_ops.cpp"
#include "quant_ops.cpp"
#include "layer_stack.cpp"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "paged decode attention from the KV cache",
        py::arg("q"), py::arg("kv_cache"), py::arg("block_tables"), py::arg("lens"),
        py::arg("block_size"), py::arg("scale"), py::arg("window") = 0,
        py::arg("variant") = "");
  m.def("prefill_attention", &prefill_attention, "causal prefill attention, K/V contiguous",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("pos"), py::arg("base"),
        py::arg("window"), py::arg("scale"), py::arg("variant") = "");
  m.def("prefill_attention_lanes", &prefill_attention_lanes,
        "query (row, head) pairs one prefill call takes; 0: no prefill kernel",
        py::arg("variant") = "");
  m.def("argmax_rows", &argmax_rows, "each row's first largest index (no NaN)", py::arg("x"),
        py::arg("variant") = "");
  m.def("rms_norm", &rms_norm, "RMSNorm of x (+ residual, updated in place)", py::arg("x"),
        py::arg("weight"), py::arg("eps"), py::arg("residual") = py::none(),
        py::arg("variant") = "");
  m.def("silu_mul", &silu_mul, "silu(gate) * up", py::arg("gate_up"), py::arg("variant") = "");
  m.def("rope_write_kv", &rope_write_kv, "rotate q, k in place; store k, v in the cache",
        py::arg("qkv"), py::arg("cos"), py::arg("sin"), py::arg("kv_cache"), py::arg("slots"),
        py::arg("num_heads"), py::arg("num_kv_heads"), py::arg("variant") = "");
  m.def("llama_decode_stack", &llama_decode_stack,
        "every Llama decoder layer of a decode-only step; returns (output, residual)");
  m.def("int8_linear", &int8_linear, "per-row W8A8 linear on the int8 GEMM");
  m.def("quant_matmul_out", &quant_matmul_out, "out = x @ W^T, W in GGUF blocks",
        py::arg("out"), py::arg("x"), py::arg("w"), py::arg("type"), py::arg("method") = "",
        py::arg("variant") = "");
  m.def("quant_matmul", &quant_matmul, "x @ W^T, W in GGUF blocks", py::arg("x"), py::arg("w"),
        py::arg("type"), py::arg("method") = "", py::arg("variant") = "");
  m.def("quant_rows", &quant_rows, "rows of W in GGUF blocks, dequantized", py::arg("w"),
        py::arg("type"), py::arg("K"), py::arg("ids"), py::arg("variant") = "");
  m.def("quant_gemv_max_m", &quant_gemv_max_m, "rows up to which the default is gemv",
        py::arg("variant") = "");
  m.def("quant_blocks_takes", &quant_blocks_takes, "whether method 'blocks' serves a type",
        py::arg("type"), py::arg("variant") = "");
  m.def("quant_variants", &quant_variants, "instruction sets this CPU runs, fastest first");
  m.def("select_quant_variant", &select_quant_variant, "the variant used when none is named");
  m.def("cpu_features", &cpu_features, "the CPU's vector extensions");
}
