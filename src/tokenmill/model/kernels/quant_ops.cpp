// Torch entry points over the quantized-block kernels: argument checks, the choice of
// instruction set, and the split of the work across threads.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cstring>
#include <string>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

#include "quant.h"

namespace tq = tokenmill::quant;

namespace {

struct Features {
  bool avx2 = false;    // AVX2 + FMA + F16C, with the OS saving YMM state
  bool avx512 = false;  // AVX-512 F/BW/VL/DQ, with the OS saving ZMM state
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool amx = false;
};

Features detect() {
  Features f;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27), f16c = c & (1u << 29);
  if (!osxsave) return f;
  unsigned xlo, xhi;
  __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  const bool ymm_os = (xlo & 0x6) == 0x6;             // SSE and AVX state
  const bool zmm_os = ymm_os && (xlo & 0xE0) == 0xE0;  // opmask and ZMM state
  const bool tile_os = (xlo & 0x60000) == 0x60000;     // AMX tile state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), avx512dq = b & (1u << 17);
  const bool avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  f.avx2 = ymm_os && avx2 && fma && f16c;
  f.avx512 = f.avx2 && zmm_os && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512_vnni = f.avx512 && (c & (1u << 11));
  f.amx = tile_os && (d & (1u << 24)) && (d & (1u << 22));  // AMX-TILE and AMX-BF16
  unsigned a1, b1, c1, d1;
  if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) f.avx512_bf16 = f.avx512 && (a1 & (1u << 5));
#endif
  return f;
}

const Features& features() {
  static const Features f = detect();
  return f;
}

// Variants this CPU can run, fastest first; "scalar" is always last.
std::vector<const tq::Kernels*> runnable() {
  std::vector<const tq::Kernels*> out;
  const Features& f = features();
  if (f.avx512 && tq::avx512_kernels()) out.push_back(tq::avx512_kernels());
  if (f.avx2 && tq::avx2_kernels()) out.push_back(tq::avx2_kernels());
  out.push_back(tq::scalar_kernels());
  return out;
}

// The variant an empty name means: the fastest, until select_quant_variant says.
std::string& default_variant() {
  static std::string name;
  return name;
}

const tq::Kernels* pick(const std::string& variant) {
  const auto all = runnable();
  const std::string& name = variant.empty() ? default_variant() : variant;
  if (name.empty()) return all.front();
  for (const tq::Kernels* k : all) {
    if (name == k->name) return k;
  }
  TORCH_CHECK(false, "kernel variant '", variant, "' cannot run on this CPU or build");
  return nullptr;
}

// Rows of W each thread task takes: enough to amortise the task, few enough that the
// rows of a small matrix still spread over the threads.
int64_t row_grain(int64_t N) {
  const int64_t threads = at::get_num_threads();
  return std::max<int64_t>(16, N / (4 * threads));
}

// How many rows of W one tile holds: a tile of float32 rows should stay in L2.
int64_t tile_rows(int64_t K) { return std::max<int64_t>(8, (96 * 1024 / 4) / K / 8 * 8); }

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
// = x (M, K) @ dequant(w)^T. method: "" (choose by M), "gemv" or "tile".
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
  const tq::Kernels* k = pick(variant);
  const bool use_gemv = method.empty() ? M <= 4 : method == "gemv";
  TORCH_CHECK(method.empty() || method == "gemv" || method == "tile", "unknown method ", method);
  const uint8_t* wp = w.data_ptr<uint8_t>();
  const int64_t row_bytes = w.size(1);
  if (use_gemv) {
    std::vector<float> xsum(M * (K / info.group));
    tq::group_sums(x.data_ptr<float>(), x.stride(0), M, K, info.group, xsum.data());
    const tq::Problem p{static_cast<int>(type), wp, row_bytes, K, x.data_ptr<float>(),
                        x.stride(0), xsum.data(), M, out.data_ptr<float>(), out.stride(0)};
    at::parallel_for(0, N, row_grain(N), [&](int64_t n0, int64_t n1) { k->gemv(p, n0, n1); });
    return;
  }
  const int64_t T = tile_rows(K);
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t ldx = x.stride(0), ldo = out.stride(0);
  const int64_t tiles = (N + T - 1) / T;
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> buf(T * K);
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
  const tq::Kernels* k = pick(variant);
  const uint8_t* wp = w.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, T, 64, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      k->dequant(static_cast<int>(type), wp, w.size(1), K, ip[t], ip[t] + 1, op + t * K);
    }
  });
  return out;
}

// Make `variant` what an empty variant name means (called once, at model load).
void select_quant_variant(const std::string& variant) {
  pick(variant);
  default_variant() = variant;
}

// The instruction sets this CPU and build can run, fastest first.
std::vector<std::string> quant_variants() {
  std::vector<std::string> out;
  for (const tq::Kernels* k : runnable()) out.emplace_back(k->name);
  return out;
}

// What the CPU reports, for the startup log.
std::vector<std::string> cpu_features() {
  const Features& f = features();
  std::vector<std::string> out;
  if (f.avx2) out.emplace_back("avx2");
  if (f.avx512) out.emplace_back("avx512");
  if (f.avx512_vnni) out.emplace_back("avx512_vnni");
  if (f.avx512_bf16) out.emplace_back("avx512_bf16");
  if (f.amx) out.emplace_back("amx_bf16");
  return out;
}
