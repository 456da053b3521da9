// SIMD versions of the layer operators (see ops.h), written once over a vector type V
// as in quant_simd.h (same inclusion rule: only after an instruction-set pragma). Beyond
// quant_simd.h's needs, V provides: add, sub, div, max, exp (within 2 ulp on the
// range softmax and SiLU use), and load_bf16 (W bfloat16 values -> floats).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "ops.h"

namespace tokenmill {
namespace ops {
namespace {

// Whether V reduces 16 accumulators at once (V::hsum16), adding the same pairs in the
// same tree as V::hsum does for each, so either way gives the same bits.
template <class T, class = void>
struct HasHsum16 {
  static constexpr bool value = false;
};
template <class T>
struct HasHsum16<T, decltype(void(T::kHsum16))> {
  static constexpr bool value = T::kHsum16;
};

template <class V>
void rmsnorm(const float* x, float* residual, const float* w, float eps, int64_t D,
             float* out) {
  using F = typename V::F;
  const float* src = x;
  int64_t i = 0;
  F acc = V::zero();
  if (residual != nullptr) {
    for (; i + V::W <= D; i += V::W) {
      const F r = V::add(V::loadu(residual + i), V::loadu(x + i));
      V::storeu(residual + i, r);
      acc = V::fmadd(r, r, acc);
    }
    for (int64_t j = i; j < D; ++j) residual[j] += x[j];
    src = residual;
  } else {
    for (; i + V::W <= D; i += V::W) {
      const F r = V::loadu(x + i);
      acc = V::fmadd(r, r, acc);
    }
  }
  float ss = V::hsum(acc);
  for (; i < D; ++i) ss += src[i] * src[i];
  const float inv = 1.f / std::sqrt(ss / static_cast<float>(D) + eps);
  const F iv = V::set1(inv);
  i = 0;
  for (; i + V::W <= D; i += V::W) {
    V::storeu(out + i, V::mul(V::mul(V::loadu(src + i), iv), V::loadu(w + i)));
  }
  for (; i < D; ++i) out[i] = (src[i] * inv) * w[i];
}

template <class V>
void silu_mul(const float* gate_up, int64_t I, float* out) {
  using F = typename V::F;
  const F one = V::set1(1.f);
  int64_t i = 0;
  for (; i + V::W <= I; i += V::W) {
    const F g = V::loadu(gate_up + i);
    const F s = V::div(g, V::add(one, V::exp(V::sub(V::zero(), g))));
    V::storeu(out + i, V::mul(s, V::loadu(gate_up + I + i)));
  }
  for (; i < I; ++i) {
    const float g = gate_up[i];
    out[i] = g / (1.f + std::exp(-g)) * gate_up[I + i];
  }
}

template <class V>
void rope(float* x, int64_t heads, int64_t D, const float* cos, const float* sin) {
  using F = typename V::F;
  const int64_t half = D / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* a = x + h * D;
    float* b = a + half;
    int64_t i = 0;
    for (; i + V::W <= half; i += V::W) {
      const F x1 = V::loadu(a + i), x2 = V::loadu(b + i);
      const F c = V::loadu(cos + i), s = V::loadu(sin + i);
      V::storeu(a + i, V::sub(V::mul(x1, c), V::mul(x2, s)));
      V::storeu(b + i, V::add(V::mul(x2, c), V::mul(x1, s)));
    }
    for (; i < half; ++i) {
      const float x1 = a[i], x2 = b[i];
      a[i] = x1 * cos[i] - x2 * sin[i];
      b[i] = x2 * cos[i] + x1 * sin[i];
    }
  }
}

// The largest of v's W lanes.
template <class V>
inline float hmax(typename V::F v) {
  float t[V::W];
  V::storeu(t, v);
  float m = t[0];
  for (int i = 1; i < V::W; ++i) m = t[i] > m ? t[i] : m;
  return m;
}

template <class V>
inline typename V::F load_row(const float* p) {
  return V::loadu(p);
}

template <class V>
inline typename V::F load_row(const uint16_t* p) {
  return V::load_bf16(p);
}

inline float load_one(const float* p) { return *p; }

inline float load_one(const uint16_t* p) {
  const uint32_t bits = static_cast<uint32_t>(*p) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Calls f(j, slot, ahead) for context positions first + j, j = 0 .. L-first-1, in order,
// walking the block table (no division per position). ahead: the slot at the same offset
// in the next block of the table, or -1 past the last one (a row to prefetch).
template <class Fn>
inline void for_each_slot(const AttendArgs& a, Fn&& f) {
  const int64_t nblk = (a.L + a.block_size - 1) / a.block_size;
  int64_t j = 0;
  int64_t i = a.first & (a.block_size - 1);  // offset in the first block
  for (int64_t blk = a.first / a.block_size, l = a.first; l < a.L; ++blk, i = 0) {
    const int64_t base = a.table[blk] * a.block_size;
    const int64_t next = blk + 1 < nblk ? a.table[blk + 1] * a.block_size : -1;
    const int64_t end = a.L - l < a.block_size - i ? i + (a.L - l) : a.block_size;
    for (; i < end; ++i, ++j, ++l) f(j, base + i, next < 0 ? -1 : next + i);
  }
}

// Asks for the cache lines of n elements at p ahead of their use.
template <typename T>
inline void prefetch_row(const T* p, int64_t n) {
  constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(T));
  for (int64_t d = 0; d < n; d += kLine) __builtin_prefetch(p + d);
}

// Reads one vector from every cache line of the group's key and value rows, in position
// order, before any arithmetic, and discards it. The rows are scattered over the KV pool
// in 16-position blocks, and the kernel's own passes, with arithmetic between the loads,
// kept few lines in flight; software prefetches, of any hint and any distance, did not
// help (docs/performance.md), but a pass of plain loads does: the hardware then streams
// the rest, and the passes below read from L2. Zen 5, attention_harness.cpp, 32
// sequences x 164 positions over the 1 GiB pool: 23.5 -> 17.2 ms (4 KB pages), 21.2 ->
// 16.0 (huge pages); 8 x 500: 18.3 -> 13.6 ms; one sequence: unchanged; with every
// sequence on the same few blocks (all in L2, which serving never sees) 6.3 -> 8.1 ms.
template <class V, typename T>
inline void touch_rows(const AttendArgs& a, const T* k, const T* v, int64_t row) {
  constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(T));
  typename V::F tk = V::zero(), tv = V::zero();
  for_each_slot(a, [&](int64_t, int64_t slot, int64_t) {
    for (int64_t d = 0; d + V::W <= a.D; d += kLine) {
      tk = V::max(tk, load_row<V>(k + slot * row + d));
      tv = V::max(tv, load_row<V>(v + slot * row + d));
    }
  });
  static thread_local volatile float sink;  // keeps the loads
  sink = V::hsum(V::max(tk, tv));
}

// The vector at p, any bytes read as floats: a load that touches p's cache line.
template <class V>
inline typename V::F load_line(const char* p) {
  return V::loadu(reinterpret_cast<const float*>(p));
}

// touch_rows for a whole sequence: the rows of kv heads h0 .. h1-1 together, which for
// all heads is each block's keys and values as two contiguous runs, walked kWays blocks
// side by side. One block at a time, one core read random 12 KB runs at 9-13 GB/s on
// Zen 5; four side by side, at 25 (the memory system then has that many streams to
// serve). attention_harness.cpp, 32 sequences x 164 positions scattered over the 1 GiB
// pool, alternated: 16.3-16.7 -> 13.9-14.9 ms (the reading alone ~11 -> ~9 ms). A long
// sequence's rows would leave L2 before its groups used them (1 x 8000: 36 -> 39-43 ms),
// hence kTouchSequenceBytes. Reads only the attended rows' lines.
template <class V>
void touch_kv(const AttendArgs& a, int64_t elem_bytes, int64_t h0, int64_t h1) {
  constexpr int kWays = 4;
  constexpr int64_t kLine = 64;
  using F = typename V::F;
  const int64_t bs = a.block_size, row = a.Hkv * a.D * elem_bytes;
  const int64_t c0 = h0 * a.D * elem_bytes, c1 = h1 * a.D * elem_bytes;
  const char* k = static_cast<const char*>(a.k_base);
  const char* v = static_cast<const char*>(a.v_base);
  F t = V::zero();
  unsigned char tail = 0;
  // Every row of kWays blocks, every head: each block's keys and values are two runs of
  // bs * row bytes, read a line of each block in turn. Few instructions a load: the
  // loads in flight set the speed, and with fewer instructions between them the reorder
  // buffer holds more (the general loop below alone read ~15% slower, and the kernel
  // then gained nothing over touch_rows).
  const bool whole = c0 == 0 && c1 == row && row % kLine == 0;
  const int64_t end = (a.L + bs - 1) / bs;
  int64_t blk = a.first / bs;
  if (whole) {
    if (a.first % bs != 0) ++blk;  // the first block is part-attended: general loop
    const int64_t full_end = a.L / bs;
    for (; blk + kWays <= full_end; blk += kWays) {
      const char* kb[kWays];
      const char* vb[kWays];
      for (int w = 0; w < kWays; ++w) {
        kb[w] = k + a.table[blk + w] * bs * row;
        vb[w] = v + a.table[blk + w] * bs * row;
      }
      for (int64_t off = 0; off < bs * row; off += kLine) {
        for (int w = 0; w < kWays; ++w) {
          t = V::max(t, load_line<V>(kb[w] + off));
          t = V::max(t, load_line<V>(vb[w] + off));
        }
      }
    }
  }
  // The rest (part-attended blocks, a last group of fewer than kWays, some heads only):
  // row by row, offsets outside a block's attended lo .. hi-1 reading its nearest
  // attended row again (from L1), so nothing else is read and the loop has no branch.
  auto rest = [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b += kWays) {
      const int n = static_cast<int>(std::min<int64_t>(kWays, b1 - b));
      const char* kb[kWays];
      const char* vb[kWays];
      int64_t lo[kWays], hi[kWays];
      for (int w = 0; w < n; ++w) {
        const int64_t pos = (b + w) * bs;
        kb[w] = k + a.table[b + w] * bs * row;
        vb[w] = v + a.table[b + w] * bs * row;
        lo[w] = std::max<int64_t>(a.first - pos, 0);
        hi[w] = std::min<int64_t>(a.L - pos, bs);
      }
      for (int64_t i = 0; i < bs; ++i) {
        int64_t at[kWays];
        for (int w = 0; w < n; ++w) at[w] = std::min(std::max(i, lo[w]), hi[w] - 1) * row;
        int64_t c = c0;
        for (; c + kLine <= c1; c += kLine) {
          for (int w = 0; w < n; ++w) {
            t = V::max(t, load_line<V>(kb[w] + at[w] + c));
            t = V::max(t, load_line<V>(vb[w] + at[w] + c));
          }
        }
        if (c < c1) {  // a last part line (head bytes not a multiple of 64)
          for (int w = 0; w < n; ++w) tail ^= kb[w][at[w] + c] ^ vb[w][at[w] + c];
        }
      }
    }
  };
  if (whole && a.first % bs != 0) rest(a.first / bs, a.first / bs + 1);
  rest(blk, end);
  static thread_local volatile float sink;  // keeps the loads
  sink = V::hsum(t) + tail;
}

// o[0 .. NV W) = the sum over the attended positions j of p[j] * (value row j from v),
// in position order, one FMA a term.
template <class V, typename T, int NV>
inline void weigh_values(const AttendArgs& a, const float* p, const T* v, int64_t row,
                         float* o) {
  using F = typename V::F;
  F acc[NV];
  for (int i = 0; i < NV; ++i) acc[i] = V::zero();
  for_each_slot(a, [&](int64_t j, int64_t slot, int64_t) {
    const T* r = v + slot * row;
    const F pv = V::set1(p[j]);
    for (int i = 0; i < NV; ++i) acc[i] = V::fmadd(pv, load_row<V>(r + i * V::W), acc[i]);
  });
  for (int i = 0; i < NV; ++i) V::storeu(o + i * V::W, acc[i]);
}

// Scores: each K row is read for every head of the query group (from L1 after the
// first), with two partial sums per head to halve the FMA chain; where V has hsum16,
// 16 positions' sums are reduced together (at head size 64 the reduction was most of a
// score's work) and scaled as one vector. Softmax: max, exp and the 1 / sum scaling in
// vectors. Values: one query head at a time, its output held in registers, 8, 4 or 1
// vectors a pass (compile-time counts: a runtime one left a branch on every FMA). While
// the scores walk the keys, the key row one block ahead is prefetched: blocks are
// scattered, so the hardware's stream prefetch stops at each block's end. Each output
// element sums its terms in position order, one FMA a term, whatever the pass width.
// The vector loops cover the first D / W * W elements of a row; the rest (none for head
// sizes 64, 128, 256) runs scalar.
template <class V, typename T>
void attend(const AttendArgs& a) {
  using F = typename V::F;
  const T* kc = static_cast<const T*>(a.k_base);
  const T* vc = static_cast<const T*>(a.v_base);
  // L: the number of positions attended (scratch index j is position first + j).
  const int64_t D = a.D, Dv = D / V::W * V::W, G = a.G, L = a.L - a.first, row = a.Hkv * D;
  const int64_t head = a.h * D;
  // The vector part of query g's dot product with the K row at k, not yet reduced.
  auto partial = [&](const float* q, const T* k) {
    F s0 = V::zero(), s1 = V::zero();
    int64_t d = 0;
    for (; d + 2 * V::W <= Dv; d += 2 * V::W) {
      s0 = V::fmadd(V::loadu(q + d), load_row<V>(k + d), s0);
      s1 = V::fmadd(V::loadu(q + d + V::W), load_row<V>(k + d + V::W), s1);
    }
    if (d < Dv) s0 = V::fmadd(V::loadu(q + d), load_row<V>(k + d), s0);
    return V::add(s0, s1);
  };
  auto finish = [&](float s, const float* q, const T* k) {
    for (int64_t d = Dv; d < D; ++d) s += q[d] * load_one(k + d);
    return s * a.scale;
  };
  auto prefetch = [&](int64_t ahead) {
    if (ahead >= 0) prefetch_row(kc + ahead * row + head, D);
  };
  auto score = [&](int64_t l, int64_t slot, int64_t ahead) {
    prefetch(ahead);
    const T* k = kc + slot * row + head;
    for (int64_t g = 0; g < G; ++g) {
      const float* q = a.q + g * D;
      a.scratch[g * L + l] = finish(V::hsum(partial(q, k)), q, k);
    }
  };
  if (!a.touched) touch_rows<V>(a, kc + head, vc + head, row);
  if constexpr (HasHsum16<V>::value) {
    static_assert(V::W == 16, "hsum16 reduces 16 lanes");
    int64_t slots[16];
    int n = 0;
    const F scale = V::set1(a.scale);
    for_each_slot(a, [&](int64_t l, int64_t slot, int64_t ahead) {
      prefetch(ahead);
      slots[n++] = slot;
      if (n < 16) return;
      n = 0;
      for (int64_t g = 0; g < G; ++g) {
        const float* q = a.q + g * D;
        F acc[16];
        alignas(64) float sums[16];
        for (int i = 0; i < 16; ++i) acc[i] = partial(q, kc + slots[i] * row + head);
        V::hsum16(acc, sums);
        float* dst = a.scratch + g * L + l - 15;
        if (Dv == D) {
          V::storeu(dst, V::mul(V::loadu(sums), scale));  // finish() with no tail
        } else {
          for (int i = 0; i < 16; ++i) dst[i] = finish(sums[i], q, kc + slots[i] * row + head);
        }
      }
    });
    // The last L % 16 positions, one at a time (their prefetches are issued).
    for (int i = 0; i < n; ++i) score(L - n + i, slots[i], -1);
  } else {
    for_each_slot(a, score);
  }
  for (int64_t g = 0; g < G; ++g) {
    float* sc = a.scratch + g * L;
    float mx = std::numeric_limits<float>::lowest();
    int64_t l = 0;
    if (L >= V::W) {
      F m = V::loadu(sc);
      for (l = V::W; l + V::W <= L; l += V::W) m = V::max(m, V::loadu(sc + l));
      mx = hmax<V>(m);
    }
    for (; l < L; ++l) mx = sc[l] > mx ? sc[l] : mx;
    const F mv = V::set1(mx);
    F sumv = V::zero();
    for (l = 0; l + V::W <= L; l += V::W) {
      const F e = V::exp(V::sub(V::loadu(sc + l), mv));
      V::storeu(sc + l, e);
      sumv = V::add(sumv, e);
    }
    float sum = V::hsum(sumv);
    for (; l < L; ++l) {
      sc[l] = std::exp(sc[l] - mx);
      sum += sc[l];
    }
    const float inv = 1.f / sum;  // folded into the probabilities: one pass fewer
    const F iv = V::set1(inv);
    for (l = 0; l + V::W <= L; l += V::W) V::storeu(sc + l, V::mul(V::loadu(sc + l), iv));
    for (; l < L; ++l) sc[l] *= inv;
  }
  const T* v = vc + head;
  for (int64_t g = 0; g < G; ++g) {
    const float* p = a.scratch + g * L;
    float* o = a.out + g * D;
    int64_t d0 = 0;  // passes of 8 vectors, then 4, then 1: one walk of the table each
    for (; d0 + 8 * V::W <= Dv; d0 += 8 * V::W) weigh_values<V, T, 8>(a, p, v + d0, row, o + d0);
    for (; d0 + 4 * V::W <= Dv; d0 += 4 * V::W) weigh_values<V, T, 4>(a, p, v + d0, row, o + d0);
    for (; d0 < Dv; d0 += V::W) weigh_values<V, T, 1>(a, p, v + d0, row, o + d0);
    for (int64_t d = Dv; d < D; ++d) {
      float s = 0.f;
      for_each_slot(a, [&](int64_t l, int64_t slot, int64_t) {
        s += p[l] * load_one(vc + slot * row + head + d);
      });
      o[d] = s;
    }
  }
}

// Query lanes of one prefill_attend call: four vectors of (query row, head) pairs.
template <class V>
struct PrefillLanes {
  static constexpr int64_t value = 4 * V::W;
};

// Causal prefill attention, one kv head's query group over a few rows (PrefillArgs).
// Flash-style: keys in blocks of 64, an online softmax, never a (rows x keys) matrix.
// Laid out transposed, one lane per (query row, head) pair: scores are K row x Q^T
// (a key element broadcast against the lanes' query elements), so the max, the
// exponentials, the running sums and the output all work down the lanes, with no
// horizontal reductions; the output is the lanes' weighted sum of value rows. Each
// lane's arithmetic depends only on its own row and keys: fully masked blocks leave it
// unchanged (scale 1, weights 0), and key blocks start on multiples of 64 absolute
// positions, so a row gets the same bits whatever rows share its call and however its
// prompt was chunked. Score sums run over the head's elements in order, one FMA each.
template <class V, int KB>
inline void prefill_scores(const PrefillArgs& a, const float* qt, int64_t j, float* st) {
  using F = typename V::F;
  constexpr int NV = 4;
  constexpr int64_t NQ = PrefillLanes<V>::value;
  F acc[KB][NV];
  for (int t = 0; t < KB; ++t)
    for (int u = 0; u < NV; ++u) acc[t][u] = V::zero();
  const float* k = a.k + j * a.kv_row + a.h * a.D;
  for (int64_t d = 0; d < a.D; ++d) {
    F qv[NV];
    for (int u = 0; u < NV; ++u) qv[u] = V::loadu(qt + d * NQ + u * V::W);
    for (int t = 0; t < KB; ++t) {
      const F kv = V::set1(k[t * a.kv_row + d]);
      for (int u = 0; u < NV; ++u) acc[t][u] = V::fmadd(kv, qv[u], acc[t][u]);
    }
  }
  for (int t = 0; t < KB; ++t)
    for (int u = 0; u < NV; ++u) V::storeu(st + t * NQ + u * V::W, acc[t][u]);
}

// ot[d0 + t] += sum over the block's nk keys of v[key][d0 + t] * p[key], key order.
template <class V, int KB>
inline void prefill_values(const PrefillArgs& a, const float* pt, int64_t jb, int64_t nk,
                           int64_t d0, float* ot) {
  using F = typename V::F;
  constexpr int NV = 4;
  constexpr int64_t NQ = PrefillLanes<V>::value;
  F acc[KB][NV];
  for (int t = 0; t < KB; ++t)
    for (int u = 0; u < NV; ++u) acc[t][u] = V::loadu(ot + (d0 + t) * NQ + u * V::W);
  const float* v = a.v + jb * a.kv_row + a.h * a.D + d0;
  for (int64_t j = 0; j < nk; ++j) {
    F pv[NV];
    for (int u = 0; u < NV; ++u) pv[u] = V::loadu(pt + j * NQ + u * V::W);
    for (int t = 0; t < KB; ++t) {
      const F vv = V::set1(v[j * a.kv_row + t]);
      for (int u = 0; u < NV; ++u) acc[t][u] = V::fmadd(vv, pv[u], acc[t][u]);
    }
  }
  for (int t = 0; t < KB; ++t)
    for (int u = 0; u < NV; ++u) V::storeu(ot + (d0 + t) * NQ + u * V::W, acc[t][u]);
}

template <class V>
void prefill_attend(const PrefillArgs& a) {
  using F = typename V::F;
  constexpr int NV = 4;
  constexpr int64_t NQ = PrefillLanes<V>::value, kBlock = 64;
  constexpr int KB = V::W == 16 ? 6 : 2;  // register tile: KB x 4 accumulators
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const int64_t D = a.D, G = a.G, n = a.rows * G;
  float* qt = a.scratch;       // (D, NQ): the lanes' queries, transposed
  float* ot = qt + D * NQ;     // (D, NQ): their weighted value sums
  float* st = ot + D * NQ;     // (kBlock, NQ): a block's scores, then its weights
  float* hi = st + kBlock * NQ;  // (NQ): the last key of each lane
  float* lo = hi + NQ;           // (NQ): the first
  float* sums = lo + NQ;         // (NQ)
  for (int64_t l = 0; l < NQ; ++l) {
    const int64_t i = l < n ? l : n - 1;  // spare lanes repeat the last pair, unused
    const int64_t r = i / G;
    const float* q = a.q + r * a.q_row + (a.h * G + i % G) * D;
    for (int64_t d = 0; d < D; ++d) qt[d * NQ + l] = q[d];
    hi[l] = static_cast<float>(a.pos + r);
    lo[l] = a.window > 0 ? static_cast<float>(std::max<int64_t>(0, a.pos + r - a.window + 1))
                         : 0.f;
  }
  for (int64_t i = 0; i < D * NQ; ++i) ot[i] = 0.f;
  const int64_t last = a.pos + a.rows - 1;  // the last key any lane attends
  const int64_t first = a.window > 0 ? std::max<int64_t>(0, a.pos - a.window + 1) : 0;
  const int64_t lo_max = a.window > 0 ? std::max<int64_t>(0, last - a.window + 1) : 0;
  F m[NV], l[NV], hv[NV], lv[NV];
  for (int u = 0; u < NV; ++u) {
    m[u] = V::set1(-kInf);
    l[u] = V::zero();
    hv[u] = V::loadu(hi + u * V::W);
    lv[u] = V::loadu(lo + u * V::W);
  }
  const F scale = V::set1(a.scale), lowest = V::set1(std::numeric_limits<float>::lowest());
  const F neg_inf = V::set1(-kInf), zero = V::zero();
  for (int64_t j0 = (first + a.base) / kBlock * kBlock - a.base; j0 <= last; j0 += kBlock) {
    const int64_t jb = std::max<int64_t>(j0, 0), je = std::min(j0 + kBlock, last + 1);
    const int64_t nk = je - jb;
    int64_t j = 0;
    for (; j + KB <= nk; j += KB) prefill_scores<V, KB>(a, qt, jb + j, st + j * NQ);
    for (; j < nk; ++j) prefill_scores<V, 1>(a, qt, jb + j, st + j * NQ);
    // Some lane's range ends inside the block, or (with a window) starts after its start.
    const bool masked = je - 1 > a.pos || jb < lo_max;
    F bm[NV];
    for (int u = 0; u < NV; ++u) bm[u] = neg_inf;
    for (j = 0; j < nk; ++j) {
      const F key = V::set1(static_cast<float>(jb + j));
      for (int u = 0; u < NV; ++u) {
        F s = V::mul(V::loadu(st + j * NQ + u * V::W), scale);
        if (masked) s = V::select_le(key, hv[u], V::select_le(lv[u], key, s, neg_inf), neg_inf);
        V::storeu(st + j * NQ + u * V::W, s);
        bm[u] = V::max(bm[u], s);
      }
    }
    F ms[NV];
    for (int u = 0; u < NV; ++u) {
      const F mn = V::max(m[u], bm[u]);
      ms[u] = V::select_le(lowest, mn, mn, zero);  // a lane with no key yet: any finite
      const F alpha = V::exp(V::sub(m[u], ms[u]));  // 1 exactly where the max held
      l[u] = V::mul(l[u], alpha);
      for (int64_t d = 0; d < D; ++d) {
        float* o = ot + d * NQ + u * V::W;
        V::storeu(o, V::mul(V::loadu(o), alpha));
      }
      m[u] = mn;
    }
    for (j = 0; j < nk; ++j) {
      const F key = V::set1(static_cast<float>(jb + j));
      for (int u = 0; u < NV; ++u) {
        float* p = st + j * NQ + u * V::W;
        F e = V::exp(V::sub(V::loadu(p), ms[u]));
        if (masked) e = V::select_le(key, hv[u], V::select_le(lv[u], key, e, zero), zero);
        V::storeu(p, e);
        l[u] = V::add(l[u], e);
      }
    }
    int64_t d0 = 0;
    for (; d0 + KB <= D; d0 += KB) prefill_values<V, KB>(a, st, jb, nk, d0, ot);
    for (; d0 < D; ++d0) prefill_values<V, 1>(a, st, jb, nk, d0, ot);
  }
  for (int u = 0; u < NV; ++u) V::storeu(sums + u * V::W, l[u]);
  for (int64_t i = 0; i < n; ++i) {
    float* o = a.out + (i / G) * a.out_row + (a.h * G + i % G) * D;
    for (int64_t d = 0; d < D; ++d) o[d] = ot[d * NQ + i] / sums[i];
  }
}

// One pass: each lane keeps its largest value and the first vector index it came from
// (a later equal value does not replace it), then the lanes' winner is the largest,
// the lowest element index among equals; the scalar tail only replaces on a larger
// value, since it comes after. Indices ride in float lanes, exact below 2^24.
template <class V>
int64_t argmax(const float* x, int64_t n) {
  using F = typename V::F;
  int64_t i = 0, best = 0;
  float top = x[0];
  if (n >= V::W) {
    F b = V::loadu(x), at = V::zero();
    for (i = V::W; i + V::W <= n; i += V::W) {
      const F v = V::loadu(x + i);
      at = V::select_le(v, b, at, V::set1(static_cast<float>(i)));
      b = V::select_le(v, b, b, v);
    }
    alignas(64) float bs[V::W], as[V::W];
    V::storeu(bs, b);
    V::storeu(as, at);
    top = bs[0];
    best = static_cast<int64_t>(as[0]);
    for (int l = 1; l < V::W; ++l) {
      const int64_t idx = static_cast<int64_t>(as[l]) + l;
      if (bs[l] > top || (bs[l] == top && idx < best)) {
        top = bs[l];
        best = idx;
      }
    }
  } else {
    i = 1;
  }
  for (; i < n; ++i) {
    if (x[i] > top) {
      top = x[i];
      best = i;
    }
  }
  return best;
}

}  // namespace
}  // namespace ops
}  // namespace tokenmill
