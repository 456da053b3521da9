// The block GEMM for CPUs with AMX (Sapphire Rapids and later): y = x W^T for many rows
// of x, computed on the tile unit straight from Q4_0, Q4_1 and Q8_0 blocks.
//
// AMX multiplies bfloat16 (8 significant bits) and adds in float32. A block's integers
// (Q4: 0..15 or -8..7, Q8: -128..127) are exact in bfloat16, and each float32
// activation splits exactly into three bfloat16 pieces (each the next 8 significant
// bits, by truncation), so three passes give C = sum_k q[n, k] x[m, k] over one block
// with exact products and float32 additions (for finite x of magnitude above ~1e-31:
// AMX reads bfloat16 subnormals as zero, so a smaller x loses its last piece, or all of
// itself; an infinite x gives NaN where float32 gives infinity). Then, in float32,
//   y[m, n] += d[n, b] * C + min[n, b] * sum_k x[m, k]
// block after block: the dequantized reference (d * q + min) up to the order of the
// additions. One output depends only on row m of x and row n of W, as in the other
// kernels, but its bits differ from theirs (another order), so this path serves all
// rows above gemv_max_m and none below.
//
// The product is taken transposed, C^T (16 weight rows x 16 rows of x): A holds one
// block of 16 weight rows (32 bfloat16 each, decoded in registers), B the pieces of 16
// rows of x in AMX's pair layout (prepared once per call), and a weight row's scale
// then multiplies one row of C.
#include "quant.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// Every system header is included before the target pragma (as in isa_avx512.cpp).
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>

#if defined(__clang__)
#pragma clang attribute push(                                                          \
    __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx2,"  \
                          "fma,f16c"))),                                                 \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif

#include "avx512_hsum.h"

namespace tokenmill {
namespace quant {
namespace {

constexpr int kRows = 16;     // weight rows per strip; rows of x per group
constexpr int kPieces = 3;    // bfloat16 pieces of a float32
constexpr int kPieceWords = 256;  // one B tile: 16 pair rows x 16 rows of x, 4 bytes each

struct alignas(64) TileConfig {
  uint8_t palette;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

bool takes(int type) {
  return type == kQ4_0 || type == kQ4_1 || type == kQ4_1F || type == kQ8_0;
}

// Per group of 16 rows of x and block: kPieces B tiles, then (after all of them) the
// rows' block sums.
int64_t scratch_bytes(int64_t M, int64_t K) {
  const int64_t groups = (M + kRows - 1) / kRows, nb = K / 32;
  return groups * nb * (kPieces * kPieceWords * 4 + kRows * 4);
}

// r[i] lane j <-> r[j] lane i, by swapping the off-diagonal halves of ever smaller
// blocks (8, 4, 2, 1): 64 two-register permutes. The permutes' indices are built once
// (Transpose16's constructor), not per call: per call they cost as much as the permutes.
struct Transpose16 {
  __m512i lo[4], hi[4];  // stage s swaps blocks of d = 8 >> s
  Transpose16() {
    for (int stage = 0; stage < 4; ++stage) {
      const int d = 8 >> stage;
      alignas(64) int32_t l[16], h[16];
      for (int j = 0; j < 16; ++j) {
        l[j] = (j & d) ? 16 + j - d : j;
        h[j] = (j & d) ? 16 + j : j + d;
      }
      lo[stage] = _mm512_load_si512(l);
      hi[stage] = _mm512_load_si512(h);
    }
  }
  void operator()(__m512i* r) const {
    for (int stage = 0; stage < 4; ++stage) {
      const int d = 8 >> stage;
      for (int i = 0; i < 16; ++i) {
        if (i & d) continue;
        const __m512i a = r[i], b = r[i + d];
        r[i] = _mm512_permutex2var_epi32(a, lo[stage], b);
        r[i + d] = _mm512_permutex2var_epi32(a, hi[stage], b);
      }
    }
  }
};

// The bfloat16 bits (upper halves) of a's 16 floats, then b's: one two-source permute.
inline __m512i upper_halves(__m512i a, __m512i b) {
  const __m512i odd = _mm512_setr_epi32(0x00030001, 0x00070005, 0x000B0009, 0x000F000D,
                                        0x00130011, 0x00170015, 0x001B0019, 0x001F001D,
                                        0x00230021, 0x00270025, 0x002B0029, 0x002F002D,
                                        0x00330031, 0x00370035, 0x003B0039, 0x003F003D);
  return _mm512_permutex2var_epi16(a, odd, b);
}

// Splits x into bfloat16 pieces in B's layout: word t of pair row r of the tile for
// (group g, block b, piece p) holds elements 2r and 2r + 1 of the block for row
// 16g + t. Rows past M are zeros. A row's 16 pairs are built in one register, and 16
// rows' registers are transposed into the tile's rows.
void prepare(const Problem& p, void* scratch) {
  const int64_t nb = p.K / 32, groups = (p.M + kRows - 1) / kRows;
  uint32_t* pieces = static_cast<uint32_t*>(scratch);
  float* sums = reinterpret_cast<float*>(pieces + groups * nb * kPieces * kPieceWords);
  const __m512i top = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  const Transpose16 transpose16;
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t b = 0; b < nb; ++b) {
      __m512i rows[kPieces][kRows];
      float* s = sums + (g * nb + b) * kRows;
      for (int t = 0; t < kRows; ++t) {
        const int64_t i = g * kRows + t;
        if (i >= p.M) {
          for (int piece = 0; piece < kPieces; ++piece) rows[piece][t] = _mm512_setzero_si512();
          s[t] = 0.f;
          continue;
        }
        const float* xb = p.x + i * p.ldx + b * 32;
        __m512 rest[2] = {_mm512_loadu_ps(xb), _mm512_loadu_ps(xb + 16)};
        s[t] = hsum512(_mm512_add_ps(rest[0], rest[1]));
        for (int piece = 0; piece < kPieces; ++piece) {
          __m512i bits[2];
          for (int h = 0; h < 2; ++h) {
            bits[h] = _mm512_and_si512(_mm512_castps_si512(rest[h]), top);
            rest[h] = _mm512_sub_ps(rest[h], _mm512_castsi512_ps(bits[h]));  // exact
          }
          rows[piece][t] = upper_halves(bits[0], bits[1]);
        }
      }
      uint32_t* tiles = pieces + (g * nb + b) * kPieces * kPieceWords;
      for (int piece = 0; piece < kPieces; ++piece) {
        transpose16(rows[piece]);
        for (int r = 0; r < kRows; ++r) {
          _mm512_storeu_si512(tiles + piece * kPieceWords + r * kRows, rows[piece][r]);
        }
      }
    }
  }
}

// bfloat16 bits of small integers: q (Q4_1) or q - 8 (Q4_0), for q = 0..15, twice.
__m512i nibble_table(int type) {
  alignas(64) uint16_t t[32];
  for (int i = 0; i < 32; ++i) {
    const float f = static_cast<float>((i & 15) - (type == kQ4_0 ? 8 : 0));
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    t[i] = static_cast<uint16_t>(bits >> 16);
  }
  return _mm512_load_si512(t);
}

// A: row r = the 32 integers of block b of weight row r, in bfloat16; d, mn: the rows'
// scales and mins (zero for the types without one, and for rows past `rows`).
template <int kType>
inline void decode_strip(const uint8_t* w, int64_t row_bytes, int64_t b, int rows,
                         __m512i table, uint16_t* a, float* d, float* mn) {
  constexpr int kBytes = kType == kQ4_1F ? 24 : kType == kQ4_1 ? 20 : kType == kQ4_0 ? 18 : 34;
  const uint8_t* first = w + b * kBytes;
  // Each row's leading scale (and Q4_1's min after it), gathered at once.
  const __mmask16 live = static_cast<__mmask16>((1u << rows) - 1);
  const __m512i offsets = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      _mm512_set1_epi32(static_cast<int>(row_bytes)));
  if constexpr (kType == kQ4_1F) {  // float32 scale and min: gathered as they are
    _mm512_storeu_ps(d, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, offsets, first, 1));
    _mm512_storeu_ps(mn,
                     _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, offsets, first + 4, 1));
  } else {
    const __m512i heads =
        _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, offsets, first, 1);
    _mm512_storeu_ps(d, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(heads)));
    if constexpr (kType == kQ4_1) {
      _mm512_storeu_ps(mn,
                       _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(heads, 16))));
    }
  }
  for (int r = 0; r < rows; ++r) {
    const uint8_t* blk = first + r * row_bytes;
    if constexpr (kType == kQ8_0) {
      __m512i f[2];  // -128..127 as float32: exact, and so are their upper halves
      for (int h = 0; h < 2; ++h) {
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2 + 16 * h));
        f[h] = _mm512_castps_si512(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)));
      }
      _mm512_store_si512(a + r * 32, upper_halves(f[0], f[1]));
    } else {
      constexpr int kQs = kType == kQ4_1F ? 8 : kType == kQ4_1 ? 4 : 2;
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kQs));
      const __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0x0F));
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F));
      const __m512i q = _mm512_cvtepu8_epi16(_mm256_set_m128i(hi, lo));
      _mm512_store_si512(a + r * 32, _mm512_permutexvar_epi16(q, table));
    }
  }
}

// acc (16 weight rows x 16 rows of x) += d * c + mn * xs, row by row; for the first
// block, the same sum onto zeros held in a register rather than loaded.
template <int kType>
inline void accumulate(float* acc, const float* c, const float* d, const float* mn,
                       const float* sums, bool first) {
  const __m512 xs = _mm512_loadu_ps(sums);
  for (int r = 0; r < kRows; ++r) {
    const __m512 before = first ? _mm512_setzero_ps() : _mm512_loadu_ps(acc + r * kRows);
    __m512 v = _mm512_fmadd_ps(_mm512_set1_ps(d[r]), _mm512_load_ps(c + r * kRows), before);
    if constexpr (kType == kQ4_1 || kType == kQ4_1F) {
      v = _mm512_fmadd_ps(_mm512_set1_ps(mn[r]), xs, v);
    }
    _mm512_storeu_ps(acc + r * kRows, v);
  }
}

// Strips of W taken together: a group's three B tiles are loaded once for all of them.
constexpr int kStrips = 4;
// Groups of x rows taken together: their B tiles (3 KB a block) stay in L2 across W.
constexpr int64_t kGroups = 8;

template <int kType>
void gemm_type(const Problem& p, const void* scratch, int64_t n0, int64_t n1) {
  const int64_t nb = p.K / 32, groups = (p.M + kRows - 1) / kRows;
  const uint32_t* pieces = static_cast<const uint32_t*>(scratch);
  const float* sums = reinterpret_cast<const float*>(pieces + groups * nb * kPieces * kPieceWords);
  TileConfig cfg{};
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = kRows;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  const __m512i table = nibble_table(kType);
  alignas(64) uint16_t a[kStrips][kRows * 32];
  alignas(64) float c[2][kRows * kRows];
  alignas(64) float d[kStrips][kRows], mn[kStrips][kRows] = {};
  const std::unique_ptr<float[]> acc_buf(new float[kStrips * kGroups * kRows * kRows]);
  for (int64_t g0 = 0; g0 < groups; g0 += kGroups) {
    const int64_t g1 = g0 + kGroups < groups ? g0 + kGroups : groups;
    for (int64_t n = n0; n < n1; n += kStrips * kRows) {
      const int64_t chunk_end = n + kStrips * kRows < n1 ? n + kStrips * kRows : n1;
      const int strips = static_cast<int>((chunk_end - n + kRows - 1) / kRows);
      float* acc = acc_buf.get();  // block 0 writes it, the others add to it
      std::memset(a, 0, sizeof(a));  // rows past the end of W stay zero
      // The next chunk's rows of W, asked for a slice per block: at 32 rows of x the
      // weights come from memory faster than the kernel reads them only if they are
      // prefetched (the hardware's prefetcher does not follow 64 rows read a block at
      // a time).
      const int64_t next_end = chunk_end + kStrips * kRows < n1 ? chunk_end + kStrips * kRows : n1;
      const uint8_t* next = p.w + chunk_end * p.row_bytes;
      const int64_t next_bytes = (next_end - chunk_end) * p.row_bytes;
      const int64_t slice = (next_bytes + nb * 64 - 1) / (nb * 64) * 64;
      for (int64_t b = 0; b < nb; ++b) {
        for (int64_t off = b * slice; off < (b + 1) * slice && off < next_bytes; off += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(next + off), _MM_HINT_T1);
        }
        for (int s = 0; s < strips; ++s) {
          const int64_t r0 = n + s * kRows;
          const int rows = static_cast<int>(chunk_end - r0 < kRows ? chunk_end - r0 : kRows);
          decode_strip<kType>(p.w + r0 * p.row_bytes, p.row_bytes, b, rows, table, a[s], d[s],
                              mn[s]);
        }
        for (int64_t g = g0; g < g1; ++g) {
          const uint32_t* tiles = pieces + (g * nb + b) * kPieces * kPieceWords;
          const float* xs = sums + (g * nb + b) * kRows;
          _tile_loadd(2, tiles, 64);
          _tile_loadd(3, tiles + kPieceWords, 64);
          _tile_loadd(4, tiles + 2 * kPieceWords, 64);
          float* ag = acc + (g - g0) * kStrips * kRows * kRows;
          // Two strips at once: two independent accumulator tiles hide the latency of
          // a product that waits on the one before it.
          int s = 0;
          for (; s + 2 <= strips; s += 2) {
            _tile_loadd(1, a[s], 64);
            _tile_loadd(5, a[s + 1], 64);
            _tile_zero(0);
            _tile_zero(6);
            _tile_dpbf16ps(0, 1, 2);
            _tile_dpbf16ps(6, 5, 2);
            _tile_dpbf16ps(0, 1, 3);
            _tile_dpbf16ps(6, 5, 3);
            _tile_dpbf16ps(0, 1, 4);
            _tile_dpbf16ps(6, 5, 4);
            _tile_stored(0, c[0], 64);
            _tile_stored(6, c[1], 64);
            accumulate<kType>(ag + s * kRows * kRows, c[0], d[s], mn[s], xs, b == 0);
            accumulate<kType>(ag + (s + 1) * kRows * kRows, c[1], d[s + 1], mn[s + 1], xs,
                              b == 0);
          }
          if (s < strips) {
            _tile_loadd(1, a[s], 64);
            _tile_zero(0);
            _tile_dpbf16ps(0, 1, 2);
            _tile_dpbf16ps(0, 1, 3);
            _tile_dpbf16ps(0, 1, 4);
            _tile_stored(0, c[0], 64);
            accumulate<kType>(ag + s * kRows * kRows, c[0], d[s], mn[s], xs, b == 0);
          }
        }
      }
      for (int64_t i = g0 * kRows; i < p.M && i < g1 * kRows; ++i) {
        const float* ai = acc + ((i / kRows - g0) * kStrips) * kRows * kRows + i % kRows;
        float* y = p.y + i * p.ldy;
        for (int64_t r = n; r < chunk_end; ++r) {
          y[r] = ai[((r - n) / kRows) * kRows * kRows + ((r - n) % kRows) * kRows];
        }
      }
    }
  }
  _tile_release();
}

void gemm_blocks(const Problem& p, const void* scratch, int64_t n0, int64_t n1) {
  switch (p.type) {
    case kQ4_0: gemm_type<kQ4_0>(p, scratch, n0, n1); return;
    case kQ4_1: gemm_type<kQ4_1>(p, scratch, n0, n1); return;
    case kQ4_1F: gemm_type<kQ4_1F>(p, scratch, n0, n1); return;
    case kQ8_0: gemm_type<kQ8_0>(p, scratch, n0, n1); return;
    default: return;
  }
}

}  // namespace

const Kernels* amx_kernels() {
  // Linux hands out the tile state only on request (arch_prctl ARCH_REQ_XCOMP_PERM for
  // XFEATURE_XTILEDATA); without it the first tile instruction faults.
  static const Kernels* table = []() -> const Kernels* {
    if (syscall(SYS_arch_prctl, 0x1023, 18) != 0 || avx512_kernels() == nullptr) return nullptr;
    static Kernels k = *avx512_kernels();
    k.name = "amx";
    k.blocks_takes = takes;
    k.blocks_scratch = scratch_bytes;
    k.blocks_prepare = prepare;
    k.gemm_blocks = gemm_blocks;
    return &k;
  }();
  return table;
}

}  // namespace quant
}  // namespace tokenmill

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else

namespace tokenmill {
namespace quant {
const Kernels* amx_kernels() { return nullptr; }
}  // namespace quant
}  // namespace tokenmill

#endif
