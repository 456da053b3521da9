// The kernels for CPUs with AVX2, FMA and F16C (Haswell, Zen and later), compiled for
// that target whatever the build's own flags; they run only where the CPU has it.
#include "quant.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#include "quant_simd.h"

namespace tokenmill {
namespace quant {
namespace {

struct VecAvx2 {
  using F = __m256;
  static constexpr int W = 8;
  static constexpr int kMR = 4, kNR = 3;  // 12 accumulators + 3 weights + 1 input
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
};

const Kernels kAvx2 = {"avx2", gemv<VecAvx2>, dequant<VecAvx2>, gemm_tile<VecAvx2>};

}  // namespace

const Kernels* avx2_kernels() { return &kAvx2; }

}  // namespace quant
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
}  // namespace tokenmill

#endif
