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
  // Lane i + lane i + 8, then i + 4, i + 2, i + 1: spelled out (not the compiler's
  // _mm512_reduce_add_ps, whose tree is its own) because hsum16 must add the same pairs.
  static inline float hsum(F v) {
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
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

// gemv (one pass over W for up to 8 rows) up to M = 7: measured on an AVX-512 Xeon
// (benchmarks/block_kernels.py, gate_up), by row against by tile: M = 5 325 vs 362 us,
// M = 7 388 vs 482, M = 8 425 vs 407.
const Kernels kAvx512 = {"avx512", gemv<VecAvx512>, dequant<VecAvx512>,
                         gemm_tile<VecAvx512>, 7};

}  // namespace

const Kernels* avx512_kernels() { return &kAvx512; }

}  // namespace quant

namespace ops {
namespace {
using quant::VecAvx512;
const Ops kAvx512 = {"avx512",          rmsnorm<VecAvx512>,         silu_mul<VecAvx512>,
                     rope<VecAvx512>,   attend<VecAvx512, float>,   attend<VecAvx512, uint16_t>};
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
