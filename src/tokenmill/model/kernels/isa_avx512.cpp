// The kernels for CPUs with AVX-512 F/BW/VL/DQ (Skylake-SP, Ice Lake, Sapphire Rapids,
// Zen 4 and later): the AVX2 algorithms over 16-float vectors, compiled for that target
// whatever the build's own flags; they run only where the CPU has it.
#include "ops.h"
#include "quant.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// Every system header is included before the target pragma: an inline function of
// theirs compiled for the wider target could be kept by the linker for all callers.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__clang__)
#pragma clang attribute push(                                                          \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))),       \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif

#include "avx512_hsum.h"
#include "ops_simd.h"
#include "quant_simd.h"

namespace tokenmill {
namespace quant {
namespace {

struct VecAvx512 {
  using F = __m512;
  static constexpr int W = 16;
  static constexpr int kMR = 4, kNR = 4;  // 16 accumulators of 32 registers
  static constexpr int kGemvRows = 8;
  static inline F zero() { return _mm512_setzero_ps(); }
  static inline F set1(float v) { return _mm512_set1_ps(v); }
  static inline F loadu(const float* p) { return _mm512_loadu_ps(p); }
  static inline void storeu(float* p, F v) { _mm512_storeu_ps(p, v); }
  static inline F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static inline F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  // The fixed tree of avx512_hsum.h, whose pairs hsum16 adds too.
  static inline float hsum(F v) { return hsum512(v); }
  // out[s] = hsum(v[s]) for 16 vectors, each level of the tree done for all of them
  // at once: 15 adds and 30 shuffles instead of 16 x (4 adds and 4 extracts).
  static constexpr bool kHsum16 = true;
  static inline void hsum16(const F* v, float* out) {
    F c[8], g[4], p[2];
    for (int k = 0; k < 8; ++k)  // i + 8: c[k] = [v[2k] 8 lanes, v[2k + 1] 8 lanes]
      c[k] = add(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                 _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int k = 0; k < 4; ++k)  // i + 4: quarter q of g[k] is v[4k + q]
      g[k] = add(_mm512_shuffle_f32x4(c[2 * k], c[2 * k + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                 _mm512_shuffle_f32x4(c[2 * k], c[2 * k + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int k = 0; k < 2; ++k)  // i + 2: quarter q of p[k] is [v[8k + q] x2, v[8k + 4 + q] x2]
      p[k] = add(_mm512_shuffle_ps(g[2 * k], g[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                 _mm512_shuffle_ps(g[2 * k], g[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    // i + 1: lane 4q + j holds the sum of v[4j + q]; the permutation puts v[s] at s.
    const F z = add(_mm512_shuffle_ps(p[0], p[1], _MM_SHUFFLE(2, 0, 2, 0)),
                    _mm512_shuffle_ps(p[0], p[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_storeu_ps(out, _mm512_permutexvar_ps(order, z));
  }
  static inline void u8x16(__m128i b, F* out) {
    out[0] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b));
  }
  static inline void i8x16(__m128i b, F* out) {
    out[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
  }
  static inline F add(F a, F b) { return _mm512_add_ps(a, b); }
  static inline F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static inline F div(F a, F b) { return _mm512_div_ps(a, b); }
  static inline F max(F a, F b) { return _mm512_max_ps(a, b); }
  // x where a <= b, else y (a NaN compares false).
  static inline F select_le(F a, F b, F x, F y) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LE_OQ), y, x);
  }
  static inline F load_bf16(const uint16_t* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  // As VecAvx2::exp, over 16 lanes.
  static inline F exp(F x) {
    x = _mm512_min_ps(_mm512_max_ps(x, set1(-87.33654f)), set1(88.f));
    const F n = _mm512_roundscale_ps(mul(x, set1(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    F r = _mm512_fnmadd_ps(n, set1(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, set1(-2.12194440e-4f), r);
    F p = set1(1.9875691500e-4f);
    p = fmadd(p, r, set1(1.3981999507e-3f));
    p = fmadd(p, r, set1(8.3334519073e-3f));
    p = fmadd(p, r, set1(4.1665795894e-2f));
    p = fmadd(p, r, set1(1.6666665459e-1f));
    p = fmadd(p, r, set1(5.0000001201e-1f));
    p = fmadd(p, mul(r, r), add(r, set1(1.f)));
    const __m512i e = _mm512_slli_epi32(
        _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return mul(p, _mm512_castsi512_ps(e));
  }
};

// Q4_0 and Q4_1 (both forms) gemv by table lookup. A block's weights take only 16 values,
// fmadd(q, scale, offset) for q = 0..15: the same operation, on the same inputs, as
// dequant_vec, so the table holds exactly the weights the generic path computes, and
// vpermps (which reads only the low 4 bits of each index) looks up 16 of them at once.
// Per 32 weights that replaces two masks, two int-to-float conversions and two dequant
// FMAs with one table FMA, one shift and two lookups. Lanes and the order of the
// accumulating FMAs are the generic path's, so the bits are unchanged (the tile path
// and the other batch sizes still agree with it).
template <int kType, int MB, int R>
inline void gemv_nibble_block(const Problem& p, int64_t n, int64_t m0) {
  constexpr int kBytes = kType == kQ4_1F ? 24 : kType == kQ4_1 ? 20 : 18;
  constexpr int kQs = kType == kQ4_1F ? 8 : kType == kQ4_1 ? 4 : 2;
  const int64_t nb = p.K / 32;
  const float* x = p.x + m0 * p.ldx;
  const __m512 iota = _mm512_setr_ps(0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f, 8.f, 9.f, 10.f,
                                     11.f, 12.f, 13.f, 14.f, 15.f);
  __m512 acc[MB][R];
  for (int m = 0; m < MB; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm512_setzero_ps();
  for (int64_t blk = 0; blk < nb; ++blk) {
    const int64_t k = blk * 32;
    for (int r = 0; r < R; ++r) {
      const uint8_t* b = p.w + (n + r) * p.row_bytes + blk * kBytes;
      __builtin_prefetch(b + kGemvAhead * R * p.row_bytes);  // as in gemv_block
      // The float16 scale (and min) are converted by one vector conversion, not as
      // scalars one by one: fewer operations on the shuffle port, which the lookups
      // need (Q4_1 on a Sapphire Rapids Xeon: L2-resident gate_up 130 -> 111 us,
      // streamed from memory 7.4 -> 8.0 GB/s). For Q4_1 the pair is converted in a
      // 128-bit register and each value broadcast from there, not converted across 16
      // lanes and then duplicated in-lane (Zen 5, one core, every layer's Q4_1 gemv,
      // M = 1: 3.30 -> 3.05 ms; M = 2 -4%; Q4_0's single scale gained nothing).
      __m512 table;
      if constexpr (kType == kQ4_1F) {  // float32 already: two broadcasts, no conversion
        table = _mm512_fmadd_ps(iota, _mm512_set1_ps(read_f32(b)), _mm512_set1_ps(read_f32(b + 4)));
      } else if constexpr (kType == kQ4_1) {
        uint32_t dm;
        __builtin_memcpy(&dm, b, 4);
        const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dm)));  // d, m
        table = _mm512_fmadd_ps(iota, _mm512_broadcastss_ps(f),
                                _mm512_broadcastss_ps(_mm_movehdup_ps(f)));
      } else {
        uint16_t h;
        __builtin_memcpy(&h, b, 2);
        const __m512 d = _mm512_cvtph_ps(_mm256_set1_epi16(static_cast<int16_t>(h)));
        table = _mm512_fmadd_ps(iota, d, _mm512_mul_ps(d, _mm512_set1_ps(-8.f)));
      }
      const __m512i q = _mm512_cvtepu8_epi32(load16(b + kQs));
      const __m512 w0 = _mm512_permutexvar_ps(q, table);
      const __m512 w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), table);
      for (int m = 0; m < MB; ++m) {
        const float* xm = x + m * p.ldx + k;
        acc[m][r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xm), acc[m][r]);
        acc[m][r] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xm + 16), acc[m][r]);
      }
    }
  }
  for (int m = 0; m < MB; ++m)
    for (int r = 0; r < R; ++r) p.y[(m0 + m) * p.ldy + n + r] = VecAvx512::hsum(acc[m][r]);
}

template <int kType>
struct NibbleGemv {
  template <int MB, int R>
  static inline void block(const Problem& p, int64_t n, int64_t m0) {
    gemv_nibble_block<kType, MB, R>(p, n, m0);
  }
};

void gemv_avx512(const Problem& p, int64_t n0, int64_t n1) {
  switch (p.type) {
    case kQ4_0: gemv_passes<NibbleGemv<kQ4_0>, VecAvx512::kGemvRows>(p, n0, n1); return;
    case kQ4_1: gemv_passes<NibbleGemv<kQ4_1>, VecAvx512::kGemvRows>(p, n0, n1); return;
    case kQ4_1F: gemv_passes<NibbleGemv<kQ4_1F>, VecAvx512::kGemvRows>(p, n0, n1); return;
    default: gemv<VecAvx512>(p, n0, n1); return;
  }
}

// gemv (one pass over W for up to 8 rows) up to M = 8: measured on an AVX-512 Xeon
// (benchmarks/block_kernels.py) with the table-lookup gemv, by row against by tile:
// M = 8 qkv 178 vs 249 us, gate_up 586 vs 604, down 212 vs 238; at M = 12 (two passes)
// gate_up 936 vs 769 and down 425 vs 369, so tile from 9 rows on.
const Kernels kAvx512 = {"avx512", gemv_avx512, dequant<VecAvx512>,
                         gemm_tile<VecAvx512>, 8};

}  // namespace

const Kernels* avx512_kernels() { return &kAvx512; }

}  // namespace quant

namespace ops {
namespace {
using quant::VecAvx512;
const Ops kAvx512 = {"avx512",
                     rmsnorm<VecAvx512>,
                     silu_mul<VecAvx512>,
                     rope<VecAvx512>,
                     attend<VecAvx512, float>,
                     attend<VecAvx512, uint16_t>,
                     touch_kv<VecAvx512>,
                     prefill_attend<VecAvx512>,
                     PrefillLanes<VecAvx512>::value,
                     argmax<VecAvx512>};
}  // namespace

const Ops* avx512_ops() { return &kAvx512; }

}  // namespace ops
}  // namespace tokenmill

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else

namespace tokenmill {
namespace quant {
const Kernels* avx512_kernels() { return nullptr; }
}  // namespace quant
namespace ops {
const Ops* avx512_ops() { return nullptr; }
}  // namespace ops
}  // namespace tokenmill

#endif
