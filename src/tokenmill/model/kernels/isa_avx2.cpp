// The kernels for CPUs with AVX2, FMA and F16C (Haswell, Zen and later), compiled for
// that target whatever the build's own flags; they run only where the CPU has it.
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
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#include "ops_simd.h"
#include "quant_simd.h"

namespace tokenmill {
namespace quant {
namespace {

struct VecAvx2 {
  using F = __m256;
  static constexpr int W = 8;
  static constexpr int kMR = 4, kNR = 3;  // 12 accumulators + 3 weights + 1 input
  static constexpr int kGemvRows = 4;
  static inline F zero() { return _mm256_setzero_ps(); }
  static inline F set1(float v) { return _mm256_set1_ps(v); }
  static inline F loadu(const float* p) { return _mm256_loadu_ps(p); }
  static inline void storeu(float* p, F v) { _mm256_storeu_ps(p, v); }
  static inline F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static inline F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static inline float hsum(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static inline void u8x16(__m128i b, F* out) {
    out[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
    out[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(b, b)));
  }
  static inline void i8x16(__m128i b, F* out) {
    out[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    out[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(b, b)));
  }
  static inline F add(F a, F b) { return _mm256_add_ps(a, b); }
  static inline F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static inline F div(F a, F b) { return _mm256_div_ps(a, b); }
  static inline F max(F a, F b) { return _mm256_max_ps(a, b); }
  // x where a <= b, else y (a NaN compares false).
  static inline F select_le(F a, F b, F x, F y) {
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LE_OQ));
  }
  static inline F load_bf16(const uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  // exp(x) by Cody-Waite range reduction and Cephes' degree-6 polynomial; inputs are
  // clamped to [-87.3, 88], so the result is finite.
  static inline F exp(F x) {
    x = _mm256_min_ps(_mm256_max_ps(x, set1(-87.33654f)), set1(88.f));
    const F n = _mm256_round_ps(mul(x, set1(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    F r = _mm256_fnmadd_ps(n, set1(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, set1(-2.12194440e-4f), r);
    F p = set1(1.9875691500e-4f);
    p = fmadd(p, r, set1(1.3981999507e-3f));
    p = fmadd(p, r, set1(8.3334519073e-3f));
    p = fmadd(p, r, set1(4.1665795894e-2f));
    p = fmadd(p, r, set1(1.6666665459e-1f));
    p = fmadd(p, r, set1(5.0000001201e-1f));
    p = fmadd(p, mul(r, r), add(r, set1(1.f)));
    const __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return mul(p, _mm256_castsi256_ps(e));
  }
};

// Measured on Zen 3 (benchmarks/block_kernels.py): row by row wins up to M = 3.
const Kernels kAvx2 = {"avx2", gemv<VecAvx2>, dequant<VecAvx2>, gemm_tile<VecAvx2>, 3};

}  // namespace

const Kernels* avx2_kernels() { return &kAvx2; }

}  // namespace quant

namespace ops {
namespace {
using quant::VecAvx2;
const Ops kAvx2 = {"avx2",
                   rmsnorm<VecAvx2>,
                   silu_mul<VecAvx2>,
                   rope<VecAvx2>,
                   attend<VecAvx2, float>,
                   attend<VecAvx2, uint16_t>,
                   touch_kv<VecAvx2>,
                   prefill_attend<VecAvx2>,
                   PrefillLanes<VecAvx2>::value,
                   argmax<VecAvx2>};
}  // namespace

const Ops* avx2_ops() { return &kAvx2; }

}  // namespace ops
}  // namespace tokenmill

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else  // not x86-64 with a GNU-compatible compiler

namespace tokenmill {
namespace quant {
const Kernels* avx2_kernels() { return nullptr; }
}  // namespace quant
namespace ops {
const Ops* avx2_ops() { return nullptr; }
}  // namespace ops
}  // namespace tokenmill

#endif
