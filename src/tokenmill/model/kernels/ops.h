// The small per-token operators of a decoder layer, per instruction set (see quant.h
// for why this header stays free of torch). Each works on one row or one attention
// group; the torch-facing code splits a batch across threads.
#pragma once

#include <cstdint>

namespace tokenmill {
namespace ops {

// One decode query group against a paged KV cache: G query heads sharing one kv head.
// Context position l sits in slot table[l / block_size] * block_size + l % block_size.
// The group attends to positions first .. L-1 (first > 0 on a sliding-window layer);
// scratch index j holds position first + j.
struct AttendArgs {
  const float* q;        // (G, D) query rows of this kv head's group
  const void* k_base;    // keys: row s (one slot, one kv head) at k_base + (s * Hkv + h) * D
  const void* v_base;    // values, laid out like keys
  const int64_t* table;  // the sequence's block ids, in position order
  int64_t block_size;    // a power of two
  int64_t L, G, D, Hkv, h;
  float scale;
  float* out;      // (G, D)
  float* scratch;  // G * (L - first) floats
  int64_t first;   // the oldest position attended: 0, or L - window with a window
  bool touched = false;  // the caller has read the rows already (Ops::touch_kv)
};

// A sequence whose K/V rows (every kv head, the attended positions) take at most this
// many bytes has them read once, by Ops::touch_kv, before its groups attend; a longer
// one, which L2 would not keep until its groups use it, is read by each group for its
// own head (attend). See touch_kv in ops_simd.h for the figures.
constexpr int64_t kTouchSequenceBytes = int64_t{512} << 10;

inline bool touch_whole_sequence(const AttendArgs& a, int64_t elem_bytes) {
  return 2 * (a.L - a.first) * a.Hkv * a.D * elem_bytes <= kTouchSequenceBytes;
}

inline int64_t slot_of(const AttendArgs& a, int64_t l) {
  return a.table[l / a.block_size] * a.block_size + (l & (a.block_size - 1));
}

// Causal prefill attention of a few query rows against contiguous K/V rows, for the G
// query heads of kv head h. Query row r attends keys lo(r) .. pos + r of the arrays,
// lo(r) = 0, or with a window max(0, pos + r - window + 1).
struct PrefillArgs {
  const float* q;  // row r, query head n: q + r * q_row + n * D
  int64_t q_row;
  const float* k;  // key j, kv head h: k + j * kv_row + h * D
  const float* v;  // laid out like k
  int64_t kv_row;
  float* out;  // laid out like q
  int64_t out_row;
  int64_t rows;    // query rows of this call; rows * G <= Ops::prefill_lanes
  int64_t pos;     // the key index of query row 0's own position
  int64_t base;    // the absolute position of key 0 (blocks of keys align to it)
  int64_t window;  // 0: none
  int64_t D, G, h;
  float scale;
  float* scratch;  // prefill_scratch_floats(D, lanes) floats, 64-byte aligned
};

// Floats of scratch one prefill_attend call needs.
inline int64_t prefill_scratch_floats(int64_t D, int64_t lanes) {
  return (2 * D + 64 + 3) * lanes;
}

struct Ops {
  const char* name;
  // out = rmsnorm(x (+ residual)) * w over D elements. With residual non-null, first
  // residual += x, then the norm is of the sum. x and out may alias; neither aliases
  // residual.
  void (*rmsnorm)(const float* x, float* residual, const float* w, float eps, int64_t D,
                  float* out);
  // out[i] = silu(gate_up[i]) * gate_up[I + i] for i < I.
  void (*silu_mul)(const float* gate_up, int64_t I, float* out);
  // Rotate `heads` heads of D elements in place, rotate-half pairs (i, i + D/2), by the
  // angles whose cos / sin are given (D / 2 each).
  void (*rope)(float* x, int64_t heads, int64_t D, const float* cos, const float* sin);
  // Softmax attention of one group; the cache in float32 or bfloat16 (bits as uint16).
  void (*attend_f32)(const AttendArgs& a);
  void (*attend_bf16)(const AttendArgs& a);
  // Optional (nullptr where absent): read every cache line of the key and value rows of
  // kv heads h0 .. h1-1 at a's attended positions (a.h unused), elements of elem_bytes,
  // and discard what was read, so the groups' attend then finds them in cache.
  void (*touch_kv)(const AttendArgs& a, int64_t elem_bytes, int64_t h0, int64_t h1);
  // Optional (nullptr where absent): prefill attention (PrefillArgs), and how many
  // (query row, head) pairs one call takes.
  void (*prefill_attend)(const PrefillArgs& a);
  int64_t prefill_lanes;
  // The index of the first largest of x[0 .. n), n >= 1, n < 2^24, no NaN.
  int64_t (*argmax)(const float* x, int64_t n);
};

const Ops* scalar_ops();
const Ops* avx2_ops();    // nullptr where the build lacks it
const Ops* avx512_ops();  // nullptr where the build lacks it

}  // namespace ops
}  // namespace tokenmill
