// Torch entry points for the small operators of a decoder layer (ops.h), fused so that
// a layer runs a handful of native calls instead of dozens of ATen operators, and for
// decode attention straight from the paged KV cache. Included by bindings.cpp.
//
// KV cache layout (see attention_metadata.py): (2, num_slots, num_kv_heads, head_dim),
// float32 or bfloat16, keys at index 0 and values at 1.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/extension.h>

#include <algorithm>
#include <string>
#include <vector>

#include "ops.h"
#include "quant.h"  // TileBuffer

namespace {

void check_rows(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.dim() == 2 && t.scalar_type() == torch::kFloat32 && t.stride(1) == 1, what,
              ": (T, D) float32 with contiguous rows");
}

}  // namespace

// rmsnorm(x (+ residual)) * weight, row by row: (T, D) float32. With a residual (T, D),
// residual += x first (in place) and the norm is of that sum. Does not modify x.
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps,
                       c10::optional<torch::Tensor> residual, const std::string& variant) {
  check_rows(x, "x");
  const int64_t T = x.size(0), D = x.size(1);
  weight = weight.contiguous();
  TORCH_CHECK(weight.scalar_type() == torch::kFloat32 && weight.numel() == D, "weight: (D,)");
  float* rp = nullptr;
  int64_t ldr = 0;
  if (residual.has_value() && residual->defined()) {
    check_rows(*residual, "residual");
    TORCH_CHECK(residual->size(0) == T && residual->size(1) == D, "residual: (T, D)");
    rp = residual->data_ptr<float>();
    ldr = residual->stride(0);
  }
  auto out = torch::empty({T, D}, x.options());
  const auto* ops = tokenmill::pick_isa(variant).ops;
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t ldx = x.stride(0);
  at::parallel_for(0, T, 16, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      ops->rmsnorm(xp + t * ldx, rp ? rp + t * ldr : nullptr, wp, static_cast<float>(eps), D,
                   op + t * D);
    }
  });
  return out;
}

// (T, 2I) -> (T, I): silu(gate) * up, gate and up the two halves of each row.
torch::Tensor silu_mul(torch::Tensor gate_up, const std::string& variant) {
  check_rows(gate_up, "gate_up");
  TORCH_CHECK(gate_up.size(1) % 2 == 0, "gate_up: an even number of columns");
  const int64_t T = gate_up.size(0), I = gate_up.size(1) / 2;
  auto out = torch::empty({T, I}, gate_up.options());
  const auto* ops = tokenmill::pick_isa(variant).ops;
  const float* gp = gate_up.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t ld = gate_up.stride(0);
  at::parallel_for(0, T, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) ops->silu_mul(gp + t * ld, I, op + t * I);
  });
  return out;
}

// The attention half of a layer's input, in one pass per token: rotate the q and k
// heads of qkv (T, (H + 2 Hkv) * D) in place by cos / sin (T, D / 2), then store each
// token's k and v rows at its cache slot. Mutates qkv and kv_cache.
void rope_write_kv(torch::Tensor qkv, torch::Tensor cos, torch::Tensor sin,
                   torch::Tensor kv_cache, torch::Tensor slots, int64_t H, int64_t Hkv,
                   const std::string& variant) {
  check_rows(qkv, "qkv");
  TORCH_CHECK(kv_cache.dim() == 4 && kv_cache.size(0) == 2 && kv_cache.is_contiguous(),
              "kv_cache: contiguous (2, S, Hkv, D)");
  const int64_t T = qkv.size(0), S = kv_cache.size(1), D = kv_cache.size(3);
  TORCH_CHECK(kv_cache.size(2) == Hkv && qkv.size(1) == (H + 2 * Hkv) * D,
              "qkv and kv_cache disagree on head shapes");
  cos = cos.contiguous();
  sin = sin.contiguous();
  slots = slots.contiguous();
  TORCH_CHECK(cos.scalar_type() == torch::kFloat32 && cos.numel() == T * (D / 2) &&
                  sin.scalar_type() == torch::kFloat32 && sin.numel() == T * (D / 2),
              "cos, sin: (T, D / 2) float32");
  TORCH_CHECK(slots.scalar_type() == torch::kInt64 && slots.numel() == T, "slots: (T,) int64");
  const int64_t* sp = slots.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t) {
    TORCH_CHECK(sp[t] >= 0 && sp[t] < S, "slot ", sp[t], " outside the cache [0, ", S, ")");
  }
  const bool bf16 = kv_cache.scalar_type() == torch::kBFloat16;
  TORCH_CHECK(bf16 || kv_cache.scalar_type() == torch::kFloat32, "cache: float32 or bfloat16");
  const auto* ops = tokenmill::pick_isa(variant).ops;
  float* qp = qkv.data_ptr<float>();
  const int64_t ld = qkv.stride(0), row = Hkv * D;
  const float* cp = cos.data_ptr<float>();
  const float* snp = sin.data_ptr<float>();
  void* base = kv_cache.data_ptr();
  at::parallel_for(0, T, 8, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* x = qp + t * ld;
      ops->rope(x, H + Hkv, D, cp + t * (D / 2), snp + t * (D / 2));
      const float* k = x + H * D;
      const float* v = k + row;
      const int64_t off = sp[t] * row;
      if (bf16) {
        auto* kc = static_cast<c10::BFloat16*>(base);
        for (int64_t i = 0; i < row; ++i) {
          kc[off + i] = c10::BFloat16(k[i]);
          kc[S * row + off + i] = c10::BFloat16(v[i]);
        }
      } else {
        auto* kc = static_cast<float*>(base);
        std::memcpy(kc + off, k, row * sizeof(float));
        std::memcpy(kc + S * row + off, v, row * sizeof(float));
      }
    }
  });
}

// Decode attention: q (B, H, D) float32, one new token per sequence, against the keys
// and values its context holds in the cache, read in place (no gather copy).
// block_tables (B, max_blocks) int64: each sequence's block ids in position order;
// lens (B,) int64: its context length (the new token included). Query heads
// g*G .. g*G+G-1 share kv head g. The tables are trusted as far as the cache goes: the
// model runner builds them from the block manager's tables; their shape is checked.
// window > 0: a sliding-window layer; the query (position lens[b] - 1) sees only the last
// `window` positions, so attention starts at lens[b] - window (0: no window).
torch::Tensor decode_attention(torch::Tensor q, torch::Tensor kv_cache,
                               torch::Tensor block_tables, torch::Tensor lens,
                               int64_t block_size, double scale, int64_t window,
                               const std::string& variant) {
  TORCH_CHECK(q.dim() == 3 && q.scalar_type() == torch::kFloat32, "q: (B, H, D) float32");
  TORCH_CHECK(kv_cache.dim() == 4 && kv_cache.size(0) == 2 && kv_cache.is_contiguous(),
              "kv_cache: contiguous (2, S, Hkv, D)");
  TORCH_CHECK(block_tables.dim() == 2 && block_tables.scalar_type() == torch::kInt64 &&
                  lens.scalar_type() == torch::kInt64,
              "block_tables (B, max_blocks) and lens (B,) must be int64");
  TORCH_CHECK(block_size > 0 && (block_size & (block_size - 1)) == 0,
              "block_size must be a power of two");
  TORCH_CHECK(window >= 0, "window must be >= 0 (0: no window)");
  q = q.contiguous();
  block_tables = block_tables.contiguous();
  lens = lens.contiguous();
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2);
  const int64_t S = kv_cache.size(1), Hkv = kv_cache.size(2);
  TORCH_CHECK(kv_cache.size(3) == D && H % Hkv == 0, "head shapes disagree");
  TORCH_CHECK(block_tables.size(0) == B && lens.size(0) == B, "batch sizes disagree");
  TORCH_CHECK(S % block_size == 0, "the cache is not a whole number of blocks");
  const int64_t max_blocks = block_tables.size(1);
  const int64_t* lp = lens.data_ptr<int64_t>();
  const int64_t* tp = block_tables.data_ptr<int64_t>();
  int64_t max_len = 1;
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(lp[b] >= 1 && lp[b] <= max_blocks * block_size, "context length ", lp[b],
                " does not fit the block table");
    max_len = std::max(max_len, lp[b]);
  }
  const bool bf16 = kv_cache.scalar_type() == torch::kBFloat16;
  TORCH_CHECK(bf16 || kv_cache.scalar_type() == torch::kFloat32, "cache: float32 or bfloat16");
  auto out = torch::empty_like(q);
  const auto* ops = tokenmill::pick_isa(variant).ops;
  const int64_t G = H / Hkv;
  const char* base = static_cast<const char*>(kv_cache.data_ptr());
  const int64_t elem = kv_cache.element_size();
  const int64_t plane = S * Hkv * D * elem;
  const float* qp = q.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B * Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(G * max_len);
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t b = idx / Hkv, h = idx % Hkv;
      const int64_t first = (window > 0 && lp[b] > window) ? lp[b] - window : 0;
      tokenmill::ops::AttendArgs a{qp + (b * H + h * G) * D,
                                   base,
                                   base + plane,
                                   tp + b * max_blocks,
                                   block_size,
                                   lp[b],
                                   G,
                                   D,
                                   Hkv,
                                   h,
                                   static_cast<float>(scale),
                                   op + (b * H + h * G) * D,
                                   scratch.data(),
                                   first};
      // A short sequence's rows are read once for the heads this thread attends.
      if (ops->touch_kv != nullptr && tokenmill::ops::touch_whole_sequence(a, elem)) {
        if (h == 0 || idx == begin) ops->touch_kv(a, elem, h, std::min(Hkv, h + end - idx));
        a.touched = true;
      }
      if (bf16) {
        ops->attend_bf16(a);
      } else {
        ops->attend_f32(a);
      }
    }
  });
  return out;
}

// Causal attention of a prompt chunk's queries q (T, H, D) against keys and values k, v
// (C, Hkv, D), float32; rows may be strided (views of a fused qkv output are read in
// place), other layouts are copied first. Query row i sits at key index pos + i and attends keys up
// to it, and with a window no further back than window - 1 before it; base is the
// absolute position of key 0. Returns (T, H, D).
torch::Tensor prefill_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v, int64_t pos,
                                int64_t base, int64_t window, double scale,
                                const std::string& variant) {
  const auto* ops = tokenmill::pick_isa(variant).ops;
  TORCH_CHECK(ops->prefill_attend != nullptr, "no prefill attention kernel in variant ",
              ops->name);
  for (auto* t : {&q, &k, &v}) {
    TORCH_CHECK(t->dim() == 3 && t->scalar_type() == torch::kFloat32, "q, k, v: 3-d float32");
    if (t->stride(2) != 1 || t->stride(1) != t->size(2)) *t = t->contiguous();
  }
  if (v.stride(0) != k.stride(0)) {
    k = k.contiguous();
    v = v.contiguous();
  }
  const int64_t T = q.size(0), H = q.size(1), D = q.size(2), C = k.size(0), Hkv = k.size(1);
  TORCH_CHECK(v.size(0) == C && v.size(1) == Hkv && k.size(2) == D && v.size(2) == D,
              "k and v must have the same shape, and q's head size");
  TORCH_CHECK(Hkv > 0 && H % Hkv == 0, "query heads must be a multiple of kv heads");
  const int64_t G = H / Hkv, lanes = ops->prefill_lanes;
  TORCH_CHECK(G <= lanes, "a query group of ", G, " heads exceeds the kernel's ", lanes, " lanes");
  TORCH_CHECK(pos >= 0 && base >= 0 && window >= 0, "pos, base and window must be >= 0");
  TORCH_CHECK(pos + T <= C, "query rows reach key ", pos + T - 1, " of only ", C);
  TORCH_CHECK(base + C < (int64_t{1} << 24), "positions beyond 2^24 are not exact as float");
  auto out = torch::empty({T, H, D}, q.options());
  if (T == 0) return out;
  const int64_t R = lanes / G;  // query rows a call takes
  const int64_t chunks = (T + R - 1) / R;
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, Hkv * chunks, 1, [&](int64_t begin, int64_t end) {
    tokenmill::quant::TileBuffer scratch(tokenmill::ops::prefill_scratch_floats(D, lanes));
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t h = idx / chunks, r0 = idx % chunks * R;
      tokenmill::ops::PrefillArgs a{qp + r0 * q.stride(0),
                                    q.stride(0),
                                    kp,
                                    vp,
                                    k.stride(0),
                                    op + r0 * H * D,
                                    H * D,
                                    std::min(R, T - r0),
                                    pos + r0,
                                    base,
                                    window,
                                    D,
                                    G,
                                    h,
                                    static_cast<float>(scale),
                                    scratch.data()};
      ops->prefill_attend(a);
    }
  });
  return out;
}

// (query row, head) pairs one prefill_attention call takes; 0 where the variant has none.
int64_t prefill_attention_lanes(const std::string& variant) {
  return tokenmill::pick_isa(variant).ops->prefill_lanes;
}

// Per row of x (N, V) float32 with no NaN: the index of its first largest value, as
// torch.max(x, dim=1).indices gives it, in one vector pass (ATen's max with indices is
// not vectorized on CPU: 0.85 ms against ~0.1 for 32 rows of a 49152-token vocabulary).
torch::Tensor argmax_rows(torch::Tensor x, const std::string& variant) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32, "x: (N, V) float32");
  TORCH_CHECK(x.size(1) >= 1 && x.size(1) < (int64_t{1} << 24), "rows of 1 .. 2^24 values");
  x = x.contiguous();
  const auto* ops = tokenmill::pick_isa(variant).ops;
  const int64_t N = x.size(0), V = x.size(1);
  auto out = torch::empty({N}, torch::dtype(torch::kInt64));
  const float* xp = x.data_ptr<float>();
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, N, 8, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) op[n] = ops->argmax(xp + n * V, V);
  });
  return out;
}
