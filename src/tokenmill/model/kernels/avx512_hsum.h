// The horizontal sum of a 16-float AVX-512 vector, in one fixed tree: lane i + lane i + 8,
// then i + 4, i + 2, i + 1. Spelled out (not the compiler's _mm512_reduce_add_ps, whose
// tree is its own) because VecAvx512::hsum16 must add the same pairs.
//
// Include it after <immintrin.h> and inside a target pragma that enables AVX-512 (as
// isa_avx512.cpp and isa_amx.cpp do). Internal linkage: each instruction-set unit keeps
// its own copy, compiled for its own target.
#ifndef TOKENMILL_MODEL_KERNELS_AVX512_HSUM_H_
#define TOKENMILL_MODEL_KERNELS_AVX512_HSUM_H_

namespace tokenmill {
namespace {

inline float hsum512(__m512 v) {
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace
}  // namespace tokenmill

#endif  // TOKENMILL_MODEL_KERNELS_AVX512_HSUM_H_
