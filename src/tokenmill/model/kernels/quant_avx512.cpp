// The kernels for CPUs with AVX-512 F/BW/VL/DQ (Skylake-SP, Ice Lake, Sapphire Rapids,
// Zen 4 and later): the AVX2 algorithms over 16-float vectors, compiled for that target
// whatever the build's own flags; they run only where the CPU has it.
#include "quant.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(                                                          \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))),       \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif

#include "quant_simd.h"

namespace tokenmill {
namespace quant {
namespace {

struct VecAvx512 {
  using F = __m512;
  static constexpr int W = 16;
  static constexpr int kMR = 4, kNR = 4;  // 16 accumulators of 32 registers
  static inline F zero() { return _mm512_setzero_ps(); }
  static inline F set1(float v) { return _mm512_set1_ps(v); }
  static inline F loadu(const float* p) { return _mm512_loadu_ps(p); }
  static inline void storeu(float* p, F v) { _mm512_storeu_ps(p, v); }
  static inline F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static inline F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static inline float hsum(F v) { return _mm512_reduce_add_ps(v); }
  static inline void u8x16(__m128i b, F* out) {
    out[0] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b));
  }
  static inline void i8x16(__m128i b, F* out) {
    out[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
  }
};

const Kernels kAvx512 = {"avx512", gemv<VecAvx512>, dequant<VecAvx512>,
                         gemm_tile<VecAvx512>};

}  // namespace

const Kernels* avx512_kernels() { return &kAvx512; }

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
const Kernels* avx512_kernels() { return nullptr; }
}  // namespace quant
}  // namespace tokenmill

#endif
