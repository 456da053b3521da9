// The SIMD kernels, written once over a vector type V (AVX2: 8 floats, AVX-512: 16).
//
// Include this only from an instruction-set translation unit, after its
// `#pragma GCC target`: everything here is in an anonymous namespace, so each unit gets
// its own copy compiled for its own target and no copy can leak into another.
//
// V provides: F (the float vector), W (lanes), zero, set1, loadu, storeu, mul, fmadd,
// hsum, and u8x16 / i8x16, which turn 16 bytes (as unsigned or signed integers) into
// 16 / W float vectors. Block decoding works on 16-byte SSE registers, which both
// targets have.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "ops_simd.h"
#include "quant.h"

namespace tokenmill {
namespace quant {
namespace {

inline float half_at(const uint8_t* p) { return _cvtsh_ss(read_u16(p)); }

inline __m128i load16(const uint8_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}

inline __m128i low_nibbles(__m128i v) { return _mm_and_si128(v, _mm_set1_epi8(0x0F)); }

inline __m128i high_nibbles(__m128i v) {
  return _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F));
}

// 16 bits of `bits` (bit i for byte i) -> bytes of 0x10 where the bit is set, else 0.
inline __m128i bits_to_0x10(uint32_t bits) {
  const __m128i spread = _mm_shuffle_epi8(
      _mm_cvtsi32_si128(static_cast<int>(bits)),
      _mm_set_epi8(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0));
  const __m128i select = _mm_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
  const __m128i set = _mm_cmpeq_epi8(_mm_and_si128(spread, select), select);
  return _mm_and_si128(set, _mm_set1_epi8(0x10));
}

// Block decoders. `groups(block, f)` calls f(q, scale, offset, k0) for each group of the
// block in ascending order: q holds the group's integers as floats (kGroup / W
// vectors), the group's weights are scale * q + offset, and k0 is the group's first
// element within the block. A decoder whose offsets are all zero says so (kNoOffset),
// and its weights are scale * q, one multiply instead of a fused multiply-add.

template <class V>
struct Q4_0 {
  static constexpr int kElems = 32, kBytes = 18, kGroup = 32;
  template <class Fn>
  static inline void groups(const uint8_t* b, Fn&& f) {
    const float d = half_at(b);
    const __m128i v = load16(b + 2);
    typename V::F q[32 / V::W];
    V::u8x16(low_nibbles(v), q);
    V::u8x16(high_nibbles(v), q + 16 / V::W);
    f(q, d, -8.f * d, 0);
  }
};

template <class V>
struct Q4_1 {
  static constexpr int kElems = 32, kBytes = 20, kGroup = 32;
  template <class Fn>
  static inline void groups(const uint8_t* b, Fn&& f) {
    const float d = half_at(b), m = half_at(b + 2);
    const __m128i v = load16(b + 4);
    typename V::F q[32 / V::W];
    V::u8x16(low_nibbles(v), q);
    V::u8x16(high_nibbles(v), q + 16 / V::W);
    f(q, d, m, 0);
  }
};

template <class V>
struct Q4_1F {
  static constexpr int kElems = 32, kBytes = 24, kGroup = 32;
  template <class Fn>
  static inline void groups(const uint8_t* b, Fn&& f) {
    const __m128i v = load16(b + 8);
    typename V::F q[32 / V::W];
    V::u8x16(low_nibbles(v), q);
    V::u8x16(high_nibbles(v), q + 16 / V::W);
    f(q, read_f32(b), read_f32(b + 4), 0);
  }
};

template <class V>
struct Q5_0 {
  static constexpr int kElems = 32, kBytes = 22, kGroup = 32;
  template <class Fn>
  static inline void groups(const uint8_t* b, Fn&& f) {
    const float d = half_at(b);
    uint32_t qh;
    __builtin_memcpy(&qh, b + 2, 4);
    const __m128i v = load16(b + 6);
    typename V::F q[32 / V::W];
    V::u8x16(_mm_or_si128(low_nibbles(v), bits_to_0x10(qh & 0xFFFF)), q);
    V::u8x16(_mm_or_si128(high_nibbles(v), bits_to_0x10(qh >> 16)), q + 16 / V::W);
    f(q, d, -16.f * d, 0);
  }
};

template <class V>
struct Q8_0 {
  static constexpr int kElems = 32, kBytes = 34, kGroup = 32;
  static constexpr bool kNoOffset = true;
  template <class Fn>
  static inline void groups(const uint8_t* b, Fn&& f) {
    const float d = half_at(b);
    typename V::F q[32 / V::W];
    V::i8x16(load16(b + 2), q);
    V::i8x16(load16(b + 18), q + 16 / V::W);
    f(q, d, 0.f, 0);
  }
};

template <class V>
struct Q4_K {
  static constexpr int kElems = 256, kBytes = 144, kGroup = 32;
  template <class Fn>
  static inline void groups(const uint8_t* b, Fn&& f) {
    const float d = half_at(b), dmin = half_at(b + 2);
    const uint8_t* s = b + 4;
    const uint8_t* qs = b + 16;
    for (int c = 0; c < 4; ++c) {
      int sc[2], mn[2];
      for (int h = 0; h < 2; ++h) {
        const int j = 2 * c + h;
        if (j < 4) {
          sc[h] = s[j] & 63;
          mn[h] = s[j + 4] & 63;
        } else {
          sc[h] = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
          mn[h] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
      }
      const __m128i a = load16(qs + 32 * c), e = load16(qs + 32 * c + 16);
      typename V::F q[32 / V::W];
      V::u8x16(low_nibbles(a), q);
      V::u8x16(low_nibbles(e), q + 16 / V::W);
      f(q, d * sc[0], -(dmin * mn[0]), 64 * c);
      V::u8x16(high_nibbles(a), q);
      V::u8x16(high_nibbles(e), q + 16 / V::W);
      f(q, d * sc[1], -(dmin * mn[1]), 64 * c + 32);
    }
  }
};

template <class V>
struct Q6_K {
  static constexpr int kElems = 256, kBytes = 210, kGroup = 16;
  template <class Fn>
  static inline void groups(const uint8_t* b, Fn&& f) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = half_at(b + 208);
    const __m128i low2 = _mm_set1_epi8(3);
    // Element 128h + 32g + l (l < 32) takes a nibble of ql and two bits of qh; a run of
    // 16 consecutive l shares one scale. Groups are produced in ascending order.
    for (int h = 0; h < 2; ++h) {
      __m128i lo[2][4], hi[2][4];
      for (int half = 0; half < 2; ++half) {
        const int l0 = 16 * half;
        const __m128i a = load16(ql + 64 * h + l0), c = load16(ql + 64 * h + 32 + l0);
        const __m128i e = load16(qh + 32 * h + l0);
        lo[half][0] = low_nibbles(a);
        lo[half][1] = low_nibbles(c);
        lo[half][2] = high_nibbles(a);
        lo[half][3] = high_nibbles(c);
        for (int g = 0; g < 4; ++g) {
          hi[half][g] = _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(e, 2 * g), low2), 4);
        }
      }
      for (int g = 0; g < 4; ++g) {
        for (int half = 0; half < 2; ++half) {
          const int k0 = 128 * h + 32 * g + 16 * half;
          const float s = d * static_cast<float>(sc[k0 / 16]);
          typename V::F q[16 / V::W];
          V::u8x16(_mm_or_si128(lo[half][g], hi[half][g]), q);
          f(q, s, -32.f * s, k0);
        }
      }
    }
  }
};

// The arithmetic every path shares, so that an output never depends on the batch or
// on the method: each weight is dequantized as fmadd(q, scale, offset), and
// y[m, n] = hsum over lanes of one vector accumulator that takes fmadd(w, x, acc) for
// k = 0, W, 2W, ... in order. gemm_tile computes the same sequence on weights
// dequantized ahead, so a row's result is the same bits alone or in any batch.

// y[m, n] for R weight rows n at once (independent FMA chains hide their latency) and
// MB rows of x starting at m0.
template <class T, class = void>
struct NoOffset {
  static constexpr bool value = false;
};
template <class T>
struct NoOffset<T, decltype(void(T::kNoOffset))> {
  static constexpr bool value = T::kNoOffset;
};

// The one way every path dequantizes a weight vector.
template <class V, class T>
inline typename V::F dequant_vec(typename V::F q, typename V::F s, typename V::F o) {
  if (NoOffset<T>::value) return V::mul(q, s);
  return V::fmadd(q, s, o);
}

// How far ahead a gemv fetches W: the same block of the rows kGemvAhead groups of R rows
// on. One group ahead was too close to hide memory latency at one or two rows of x (Zen 5,
// one core, every layer's Q4_1 gemv from memory, M = 1: 4.37 -> 3.42 ms at 4 groups, the
// speed of the same rows from L3; M = 2 5.37 -> 4.48; M = 4 -6%; M = 8 unchanged; the
// 30 MB Q8_0 head's shape, M = 1: 6.4 -> 3.3 ms). 8 groups measured the same as 4.
constexpr int kGemvAhead = 4;

template <class V, class T, int MB, int R>
inline void gemv_block(const Problem& p, int64_t n, int64_t m0) {
  using F = typename V::F;
  constexpr int NV = T::kGroup / V::W;
  const int64_t nb = p.K / T::kElems;
  const float* x = p.x + m0 * p.ldx;
  F acc[MB][R];
  for (int m = 0; m < MB; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = V::zero();
  for (int64_t blk = 0; blk < nb; ++blk) {
    const int64_t kb = blk * T::kElems;
    for (int r = 0; r < R; ++r) {
      const uint8_t* b = p.w + (n + r) * p.row_bytes + blk * T::kBytes;
      // The hardware prefetcher loses R interleaved row streams (measured on Zen 3: a
      // 30 MB Q8_0 head read at 2.9 GB/s, against 5 GB/s for the same rows read one
      // after another): fetch the same block of rows further on (kGemvAhead).
      __builtin_prefetch(b + kGemvAhead * R * p.row_bytes);
      T::groups(b, [&](const F* q, float s, float o, int k0) {
        const F sv = V::set1(s), ov = V::set1(o);
        for (int v = 0; v < NV; ++v) {
          const F w = dequant_vec<V, T>(q[v], sv, ov);
          const int64_t k = kb + k0 + v * V::W;
          for (int m = 0; m < MB; ++m) acc[m][r] = V::fmadd(w, V::loadu(x + m * p.ldx + k), acc[m][r]);
        }
      });
    }
  }
  for (int m = 0; m < MB; ++m)
    for (int r = 0; r < R; ++r) p.y[(m0 + m) * p.ldy + n + r] = V::hsum(acc[m][r]);
}

// The per-block kernel gemv_passes runs: K::block<MB, R>(p, n, m0) computes rows
// [m0, m0 + MB) of y for W rows [n, n + R). The generic one decodes through T::groups;
// an instruction set may bring its own for some types (isa_avx512.cpp).
template <class V, class T>
struct GenericGemv {
  template <int MB, int R>
  static inline void block(const Problem& p, int64_t n, int64_t m0) {
    gemv_block<V, T, MB, R>(p, n, m0);
  }
};

template <class K, int MB>
inline void gemv_rows(const Problem& p, int64_t n0, int64_t n1, int64_t m0) {
  constexpr int R = MB <= 2 ? 4 : 2;
  int64_t n = n0;
  for (; n + R <= n1; n += R) K::template block<MB, R>(p, n, m0);
  for (; n < n1; ++n) K::template block<MB, 1>(p, n, m0);
}

// x rows one pass over W serves: kRows (8 with 32 vector registers: 16 accumulators at
// R = 2; 4 with 16). Each pass dequantizes every block of W once.
template <class K, int kRows>
void gemv_passes(const Problem& p, int64_t n0, int64_t n1) {
  static_assert(kRows == 4 || kRows == 8, "gemv passes of 4 or 8 rows");
  for (int64_t m = 0; m < p.M;) {
    const int64_t rest = p.M - m;
    const int mb = static_cast<int>(rest < kRows ? rest : kRows);
    switch (mb) {
      case 8: if constexpr (kRows == 8) gemv_rows<K, 8>(p, n0, n1, m); break;
      case 7: if constexpr (kRows == 8) gemv_rows<K, 7>(p, n0, n1, m); break;
      case 6: if constexpr (kRows == 8) gemv_rows<K, 6>(p, n0, n1, m); break;
      case 5: if constexpr (kRows == 8) gemv_rows<K, 5>(p, n0, n1, m); break;
      case 4: gemv_rows<K, 4>(p, n0, n1, m); break;
      case 3: gemv_rows<K, 3>(p, n0, n1, m); break;
      case 2: gemv_rows<K, 2>(p, n0, n1, m); break;
      default: gemv_rows<K, 1>(p, n0, n1, m); break;
    }
    m += mb;
  }
}

template <class V, class T>
void gemv_type(const Problem& p, int64_t n0, int64_t n1) {
  gemv_passes<GenericGemv<V, T>, V::kGemvRows>(p, n0, n1);
}

template <class V, class T>
void dequant_type(const uint8_t* w, int64_t row_bytes, int64_t K, int64_t n0, int64_t n1,
                  float* out) {
  using F = typename V::F;
  constexpr int NV = T::kGroup / V::W;
  const int64_t nb = K / T::kElems;
  // The tile path dequantizes W one tile of rows at a time, each followed by a long
  // GEMM on it; fetching the next tile's blocks meanwhile takes their memory latency
  // off the next dequant (Zen 5, 30 layers at 32 rows of x: 56 -> 50 ms). A prefetch
  // past the matrix's end is harmless (it never faults).
  const int64_t ahead = (n1 - n0) * row_bytes;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w + n * row_bytes;
    for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(row + ahead + b);
    float* o = out + (n - n0) * K;
    for (int64_t blk = 0; blk < nb; ++blk) {
      float* ob = o + blk * T::kElems;
      T::groups(row + blk * T::kBytes, [&](const F* q, float s, float off, int k0) {
        const F sv = V::set1(s), ov = V::set1(off);
        for (int v = 0; v < NV; ++v) V::storeu(ob + k0 + v * V::W, dequant_vec<V, T>(q[v], sv, ov));
      });
    }
  }
}

template <class V>
void gemv(const Problem& p, int64_t n0, int64_t n1) {
  switch (p.type) {
    case kQ4_0: gemv_type<V, Q4_0<V>>(p, n0, n1); return;
    case kQ4_1: gemv_type<V, Q4_1<V>>(p, n0, n1); return;
    case kQ4_1F: gemv_type<V, Q4_1F<V>>(p, n0, n1); return;
    case kQ5_0: gemv_type<V, Q5_0<V>>(p, n0, n1); return;
    case kQ8_0: gemv_type<V, Q8_0<V>>(p, n0, n1); return;
    case kQ4_K: gemv_type<V, Q4_K<V>>(p, n0, n1); return;
    case kQ6_K: gemv_type<V, Q6_K<V>>(p, n0, n1); return;
    default: return;
  }
}

template <class V>
void dequant(int type, const uint8_t* w, int64_t row_bytes, int64_t K, int64_t n0, int64_t n1,
             float* out) {
  switch (type) {
    case kQ4_0: dequant_type<V, Q4_0<V>>(w, row_bytes, K, n0, n1, out); return;
    case kQ4_1: dequant_type<V, Q4_1<V>>(w, row_bytes, K, n0, n1, out); return;
    case kQ4_1F: dequant_type<V, Q4_1F<V>>(w, row_bytes, K, n0, n1, out); return;
    case kQ5_0: dequant_type<V, Q5_0<V>>(w, row_bytes, K, n0, n1, out); return;
    case kQ8_0: dequant_type<V, Q8_0<V>>(w, row_bytes, K, n0, n1, out); return;
    case kQ4_K: dequant_type<V, Q4_K<V>>(w, row_bytes, K, n0, n1, out); return;
    case kQ6_K: dequant_type<V, Q6_K<V>>(w, row_bytes, K, n0, n1, out); return;
    default: return;
  }
}

// y[i * ldy + j] = hsum(acc[i][j]). Reducing each accumulator on its own costs a chain
// of shuffles and adds per output, which at K = 576 is a fifth of the tile's
// instructions; where V can, 16 accumulators are reduced together (a quarter of the
// shuffles), with the same additions in the same tree, so the bits do not change.
template <class V, int MR, int NR>
inline void store_sums(const typename V::F (&acc)[MR][NR], float* y, int64_t ldy) {
  if constexpr (ops::HasHsum16<V>::value && MR * NR == 16) {
    float sums[16];
    V::hsum16(&acc[0][0], sums);
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) y[i * ldy + j] = sums[i * NR + j];
  } else {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) y[i * ldy + j] = V::hsum(acc[i][j]);
  }
}

// An MR x NR tile of y = x wt^T: accumulators run along k (dot-product form), so wt is
// used in its natural row-major layout with no packing.
template <class V, int MR, int NR>
inline void micro(const float* x, int64_t ldx, const float* wt, int64_t K, float* y,
                  int64_t ldy) {
  using F = typename V::F;
  F acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = V::zero();
  for (int64_t k = 0; k < K; k += V::W) {
    F w[NR];
    for (int j = 0; j < NR; ++j) w[j] = V::loadu(wt + j * K + k);
    for (int i = 0; i < MR; ++i) {
      const F xv = V::loadu(x + i * ldx + k);
      for (int j = 0; j < NR; ++j) acc[i][j] = V::fmadd(xv, w[j], acc[i][j]);
    }
  }
  store_sums<V, MR, NR>(acc, y, ldy);
}

template <class V, int MR>
inline void micro_row(const float* x, int64_t ldx, const float* wt, int64_t n, int64_t K,
                      float* y, int64_t ldy) {
  constexpr int NR = V::kNR;
  int64_t j = 0;
  for (; j + NR <= n; j += NR) micro<V, MR, NR>(x, ldx, wt + j * K, K, y + j, ldy);
  for (; j < n; ++j) micro<V, MR, 1>(x, ldx, wt + j * K, K, y + j, ldy);
}

// K must be a multiple of W (every GGUF block is).
template <class V>
void gemm_tile(const float* x, int64_t ldx, int64_t M, const float* wt, int64_t n, int64_t K,
               float* y, int64_t ldy) {
  constexpr int MR = V::kMR;
  int64_t m = 0;
  for (; m + MR <= M; m += MR) micro_row<V, MR>(x + m * ldx, ldx, wt, n, K, y + m * ldy, ldy);
  for (; m < M; ++m) micro_row<V, 1>(x + m * ldx, ldx, wt, n, K, y + m * ldy, ldy);
}

}  // namespace
}  // namespace quant
}  // namespace tokenmill
