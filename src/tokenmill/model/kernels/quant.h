// GGUF block formats and the per-instruction-set kernel tables that compute on them.
//
// This header is plain C++ (no torch): it is included by the instruction-set
// translation units, which must not pull torch's inline functions into code compiled
// for a wider target (the linker could keep that copy for every caller).
//
// A weight matrix W (N, K) is stored as GGUF stores it: each row is K / block_elems
// blocks of block_bytes bytes, rows one after another. Every supported format decodes
// to groups of `group` consecutive elements sharing one scale and one offset:
//   w = scale * q + offset, with q a small integer,
// The kernels dequantize in registers and accumulate in float32, so they equal the
// dequantized float32 reference up to the order of the additions; within one
// instruction set, y[m, n] depends only on row m of x and row n of W (never on M, the
// other rows or the method), which makes results independent of the batch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tokenmill {
namespace quant {

// Values are ggml's type ids, as in the GGUF file, except kQ4_1F: tokenmill's own
// repacking of Q4_1, never in a file (ggml's ids stay far below it).
enum QType : int {
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ6_K = 14,
  // Q4_1's block with its float16 scale and min widened to float32 (exactly): d, m,
  // then the same 16 bytes of nibbles, 24 bytes a block. The gemv reads the pair as
  // two broadcasts instead of converting it (Zen 5, one core, every layer's Q4_1
  // projections from memory, gemv_harness: M = 1 2.81-2.97 -> 2.27-2.43 ms, M = 2
  // 3.53-3.79 -> 2.89-3.03; 20% more bytes, but the block's decode was the bound).
  kQ4_1F = 259,
};

struct TypeInfo {
  int block_elems;  // elements per block (32, or 256 for the K-quants)
  int block_bytes;
  int group;        // elements sharing one scale and offset
};

// Returns false for a type id no kernel handles.
inline bool type_info(int type, TypeInfo* info) {
  switch (type) {
    case kQ4_0: *info = {32, 18, 32}; return true;
    case kQ4_1: *info = {32, 20, 32}; return true;
    case kQ4_1F: *info = {32, 24, 32}; return true;
    case kQ5_0: *info = {32, 22, 32}; return true;
    case kQ8_0: *info = {32, 34, 32}; return true;
    case kQ4_K: *info = {256, 144, 32}; return true;
    case kQ6_K: *info = {256, 210, 16}; return true;
    default: return false;
  }
}

// IEEE half -> float, exact for every input (subnormals included).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000 | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while ((mant & 0x400) == 0) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3FF) << 13);
  }
  float f;
  __builtin_memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint16_t read_u16(const uint8_t* p) {
  uint16_t v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

inline float read_f32(const uint8_t* p) {
  float v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

// One problem for the kernels below. x: M rows of K floats, row stride ldx. w: rows of
// row_bytes bytes. y: M rows, row stride ldy; column n of y is row n of W.
struct Problem {
  int type;
  const uint8_t* w;
  int64_t row_bytes;
  int64_t K;
  const float* x;
  int64_t ldx;
  int64_t M;
  float* y;
  int64_t ldy;
};

// The kernels of one instruction set. Each works on W rows [n0, n1) and writes only
// those columns of y (so threads can split N without sharing writes).
struct Kernels {
  const char* name;
  // y[m, n] = sum_k x[m, k] * W[n, k], for small M (any M works; it is meant for <= 8).
  void (*gemv)(const Problem& p, int64_t n0, int64_t n1);
  // out[(n - n0) * K + k] = W[n, k]: rows [n0, n1) dequantized to float32.
  void (*dequant)(int type, const uint8_t* w, int64_t row_bytes, int64_t K, int64_t n0,
                  int64_t n1, float* out);
  // y[m, j] = sum_k x[m, k] * wt[j, k] for j < n, wt row-major (n, K) float32.
  void (*gemm_tile)(const float* x, int64_t ldx, int64_t M, const float* wt, int64_t n,
                    int64_t K, float* y, int64_t ldy);
  // The largest M for which gemv beats dequantize-and-tile (benchmarks/block_kernels.py).
  int64_t gemv_max_m;
  // Optional (nullptr where absent): a GEMM straight from the blocks for M > gemv_max_m,
  // for the types blocks_takes accepts. blocks_prepare turns x into the kernel's form in
  // blocks_scratch(M, K) bytes, once per call; gemm_blocks then computes W rows [n0, n1).
  bool (*blocks_takes)(int type);
  int64_t (*blocks_scratch)(int64_t M, int64_t K);
  void (*blocks_prepare)(const Problem& p, void* scratch);
  void (*gemm_blocks)(const Problem& p, const void* scratch, int64_t n0, int64_t n1);
};

// How many rows of W (N of them, split over `threads`) one tile of float32 rows for
// gemm_tile holds: up to 192 KB, which stays in L2 on every CPU with AVX-512 (1-2 MB)
// and spends less of the time in each tile's first, cold rows than 96 KB did (Zen 5,
// one core, 30 layers' Q4_1 projections: 32 rows of x 38.5 -> 36.9 ms, 100 rows
// 111.7 -> 105.8 ms); but no fewer than two tiles a thread, so a small matrix still
// spreads over the threads. A multiple of 8 rows, at least 8.
inline int64_t tile_rows(int64_t K, int64_t N, int64_t threads) {
  int64_t rows = (192 * 1024 / 4) / K / 8 * 8;
  if (threads > 1) {
    const int64_t spread = ((N + 2 * threads - 1) / (2 * threads) + 7) / 8 * 8;
    if (spread < rows) rows = spread;
  }
  return rows > 8 ? rows : 8;
}

// Room for a tile of float32 rows, starting on a cache line. gemm_tile reads rows with
// full-vector loads, and malloc aligns to 16 bytes only: from a misaligned tile every
// AVX-512 load straddles two lines (Zen 5, 30 layers' projections at 32 rows of x:
// 44.8 -> 40.4 ms with the tile aligned; at 100 rows 130 -> 116 ms).
class TileBuffer {
 public:
  explicit TileBuffer(int64_t floats) : store_(static_cast<std::size_t>(floats) + kLine - 1) {}
  float* data() {
    const auto at = reinterpret_cast<uintptr_t>(store_.data());
    const uintptr_t line = kLine * sizeof(float);
    return reinterpret_cast<float*>((at + line - 1) & ~(line - 1));
  }

 private:
  static constexpr int64_t kLine = 64 / sizeof(float);
  std::vector<float> store_;
};

// nullptr where the build or the CPU lacks the instruction set.
const Kernels* scalar_kernels();
const Kernels* avx2_kernels();
const Kernels* avx512_kernels();
const Kernels* amx_kernels();  // avx512's, with gemm_blocks on the tile unit

}  // namespace quant
}  // namespace tokenmill
