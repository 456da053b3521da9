// Torch entry points over the quantized-block kernels: argument checks, the choice of
// instruction set, and the split of the work across threads.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <string>
#include <vector>

#include "quant.h"

namespace tq = tokenmill::quant;

namespace {
// Rows of W each thread task takes: enough to amortise the task, few enough that the
// rows of a small matrix still spread over the threads.
int64_t row_grain(int64_t N) {
  const int64_t threads = at::get_num_threads();
  return std::max<int64_t>(16, N / (4 * threads));
}

void check_weight(const torch::Tensor& w, int64_t type, int64_t K, tq::TypeInfo* info) {
  TORCH_CHECK(tq::type_info(static_cast<int>(type), info), "unsupported GGUF type id ", type);
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == torch::kUInt8 && w.is_contiguous(),
              "weight: contiguous (N, row_bytes) uint8");
  TORCH_CHECK(K % info->block_elems == 0, "K=", K, " is not a multiple of the block size ",
              info->block_elems);
  TORCH_CHECK(w.size(1) == K / info->block_elems * info->block_bytes,
              "weight rows hold ", w.size(1), " bytes, expected ",
              K / info->block_elems * info->block_bytes, " for K=", K);
}

}  // namespace

// out (M, N) float32, possibly a column slice of a wider tensor (unit column stride),
// = x (M, K) @ dequant(w)^T. method: "" (choose by M), "gemv", "tile" or "blocks" (the
// variant's block GEMM, where it has one for this type).
void quant_matmul_out(torch::Tensor out, torch::Tensor x, torch::Tensor w, int64_t type,
                      const std::string& method, const std::string& variant) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32, "x: (M, K) float32");
  TORCH_CHECK(x.stride(1) == 1, "x rows must be contiguous");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  tq::TypeInfo info;
  check_weight(w, type, K, &info);
  TORCH_CHECK(out.dim() == 2 && out.scalar_type() == torch::kFloat32 && out.size(0) == M &&
                  out.size(1) == N && out.stride(1) == 1,
              "out: (M, N) float32 with unit column stride");
  if (M == 0 || N == 0) return;
  if (K == 0) {  // empty sums; the kernels assume at least one block
    out.zero_();
    return;
  }
  const tq::Kernels* k = tokenmill::pick_isa(variant).quant;
  const bool use_gemv = method.empty() ? M <= k->gemv_max_m : method == "gemv";
  TORCH_CHECK(method.empty() || method == "gemv" || method == "tile" || method == "blocks",
              "unknown method ", method);
  const uint8_t* wp = w.data_ptr<uint8_t>();
  const int64_t row_bytes = w.size(1);
  if (use_gemv) {
    const tq::Problem p{static_cast<int>(type), wp, row_bytes, K, x.data_ptr<float>(),
                        x.stride(0), M, out.data_ptr<float>(), out.stride(0)};
    at::parallel_for(0, N, row_grain(N), [&](int64_t n0, int64_t n1) { k->gemv(p, n0, n1); });
    return;
  }
  if (method != "tile" && k->gemm_blocks != nullptr && k->blocks_takes(static_cast<int>(type))) {
    const tq::Problem p{static_cast<int>(type), wp, row_bytes, K, x.data_ptr<float>(),
                        x.stride(0), M, out.data_ptr<float>(), out.stride(0)};
    // One buffer per calling thread, kept: prepare writes every byte it uses, and a
    // fresh zeroed one per call (page faults and a memset) cost ~3% of a 100-token
    // prefill. It grows to the largest call's size, ~6.1 bytes x M x K (4.8 MB for
    // SmolLM2's down projection at the default 512-token step).
    static thread_local std::vector<uint8_t> kept;
    const auto need = static_cast<size_t>(k->blocks_scratch(M, K));
    if (kept.size() < need) kept.resize(need);
    uint8_t* scratch = kept.data();
    k->blocks_prepare(p, scratch);
    // Strips of 16 rows of W: the tile kernel's unit.
    const int64_t strips = (N + 15) / 16;
    const int64_t grain = std::max<int64_t>(1, row_grain(N) / 16);
    at::parallel_for(0, strips, grain, [&](int64_t s0, int64_t s1) {
      k->gemm_blocks(p, scratch, s0 * 16, std::min(N, s1 * 16));
    });
    return;
  }
  TORCH_CHECK(method != "blocks", "no block GEMM for type ", type, " in this variant");
  const int64_t T = tq::tile_rows(K, N, at::get_num_threads());
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t ldx = x.stride(0), ldo = out.stride(0);
  const int64_t tiles = (N + T - 1) / T;
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    tq::TileBuffer buf(T * K);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = t * T, n1 = std::min(N, n0 + T);
      k->dequant(static_cast<int>(type), wp, row_bytes, K, n0, n1, buf.data());
      k->gemm_tile(xp, ldx, M, buf.data(), n1 - n0, K, op + n0, ldo);
    }
  });
}

torch::Tensor quant_matmul(torch::Tensor x, torch::Tensor w, int64_t type,
                           const std::string& method, const std::string& variant) {
  auto out = torch::empty({x.size(0), w.size(0)}, x.options());
  quant_matmul_out(out, x, w, type, method, variant);
  return out;
}

// Rows `ids` of dequant(w): (len(ids), K) float32. For embedding lookups.
torch::Tensor quant_rows(torch::Tensor w, int64_t type, int64_t K, torch::Tensor ids,
                         const std::string& variant) {
  tq::TypeInfo info;
  check_weight(w, type, K, &info);
  TORCH_CHECK(ids.dim() == 1 && ids.scalar_type() == torch::kInt64, "ids: (T,) int64");
  ids = ids.contiguous();
  const int64_t T = ids.size(0), N = w.size(0);
  const int64_t* ip = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < T; ++i) {
    TORCH_CHECK(ip[i] >= 0 && ip[i] < N, "row id ", ip[i], " outside [0, ", N, ")");
  }
  auto out = torch::empty({T, K}, torch::dtype(torch::kFloat32));
  const tq::Kernels* k = tokenmill::pick_isa(variant).quant;
  const uint8_t* wp = w.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, T, 64, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      k->dequant(static_cast<int>(type), wp, w.size(1), K, ip[t], ip[t] + 1, op + t * K);
    }
  });
  return out;
}

// The largest M the default method computes by gemv.
int64_t quant_gemv_max_m(const std::string& variant) {
  return tokenmill::pick_isa(variant).quant->gemv_max_m;
}

// Whether the variant has a block GEMM for this type (method "blocks", and the default
// above quant_gemv_max_m rows).
bool quant_blocks_takes(int64_t type, const std::string& variant) {
  const tq::Kernels* k = tokenmill::pick_isa(variant).quant;
  return k->gemm_blocks != nullptr && k->blocks_takes(static_cast<int>(type));
}
