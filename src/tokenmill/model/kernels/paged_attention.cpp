// Decode attention straight from the paged KV cache: one new query token per
// sequence, keys and values read in place by slot (no gather copy).
//
// Layout (see attention_metadata.py): cache (2, num_slots, num_kv_heads, head_dim),
// float32 or bfloat16; q (B, num_heads, head_dim) float32; slots (B, max_ctx) int64;
// lens (B,) int64. Query heads g*G .. g*G+G-1 share kv head g (G = heads / kv heads).
// window > 0: a sliding-window layer; the query (position lens[b] - 1) sees only the
// last `window` positions, so the loops start at lens[b] - window.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

inline float load(const float* p, int64_t i) { return p[i]; }

inline float load(const uint16_t* p, int64_t i) {
  uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

template <typename T>
void decode_attention_kernel(const float* q, const T* kc, const T* vc, const int64_t* slots,
                             const int64_t* lens, float* out, int64_t B, int64_t H,
                             int64_t Hkv, int64_t D, int64_t max_ctx, float scale,
                             int64_t window) {
  const int64_t G = H / Hkv;
  at::parallel_for(0, B * Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(G * max_ctx);
    std::vector<float> acc(G * D);
    std::vector<float> row(D);
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t b = idx / Hkv, hk = idx % Hkv;
      const int64_t L = lens[b];
      const int64_t first = (window > 0 && L > window) ? L - window : 0;
      const float* qg = q + (b * H + hk * G) * D;
      const int64_t* sl = slots + b * max_ctx;
      for (int64_t l = first; l < L; ++l) {
        const T* k = kc + (sl[l] * Hkv + hk) * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) row[d] = load(k, d);
        for (int64_t g = 0; g < G; ++g) {
          const float* qh = qg + g * D;
          float s = 0.f;
#pragma omp simd reduction(+ : s)
          for (int64_t d = 0; d < D; ++d) s += qh[d] * row[d];
          scores[g * max_ctx + l] = s * scale;
        }
      }
      std::vector<float> denom(G);
      for (int64_t g = 0; g < G; ++g) {
        float* sc = scores.data() + g * max_ctx;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t l = first; l < L; ++l) m = sc[l] > m ? sc[l] : m;
        float sum = 0.f;
        for (int64_t l = first; l < L; ++l) {
          sc[l] = std::exp(sc[l] - m);
          sum += sc[l];
        }
        denom[g] = sum;
      }
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t l = first; l < L; ++l) {
        const T* v = vc + (sl[l] * Hkv + hk) * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) row[d] = load(v, d);
        for (int64_t g = 0; g < G; ++g) {
          const float p = scores[g * max_ctx + l];
          float* a = acc.data() + g * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) a[d] += p * row[d];
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        float* o = out + (b * H + hk * G + g) * D;
        const float inv = 1.f / denom[g];
        const float* a = acc.data() + g * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) o[d] = a[d] * inv;
      }
    }
  });
}

}  // namespace

torch::Tensor decode_attention(torch::Tensor q, torch::Tensor kv_cache, torch::Tensor slots,
                               torch::Tensor lens, double scale, int64_t window) {
  TORCH_CHECK(q.dim() == 3 && q.scalar_type() == torch::kFloat32, "q: (B, H, D) float32");
  TORCH_CHECK(kv_cache.dim() == 4 && kv_cache.size(0) == 2, "kv_cache: (2, S, Hkv, D)");
  TORCH_CHECK(slots.scalar_type() == torch::kInt64 && lens.scalar_type() == torch::kInt64,
              "slots and lens must be int64");
  q = q.contiguous();
  kv_cache = kv_cache.contiguous();
  slots = slots.contiguous();
  lens = lens.contiguous();
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2);
  const int64_t S = kv_cache.size(1), Hkv = kv_cache.size(2);
  TORCH_CHECK(kv_cache.size(3) == D && H % Hkv == 0, "head shapes disagree");
  TORCH_CHECK(slots.size(0) == B && lens.size(0) == B, "batch sizes disagree");
  TORCH_CHECK(window >= 0, "window must be >= 0 (0: no window)");
  auto out = torch::empty_like(q);
  const int64_t max_ctx = slots.size(1);
  if (kv_cache.scalar_type() == torch::kFloat32) {
    const float* base = kv_cache.data_ptr<float>();
    decode_attention_kernel<float>(q.data_ptr<float>(), base, base + S * Hkv * D,
                                   slots.data_ptr<int64_t>(), lens.data_ptr<int64_t>(),
                                   out.data_ptr<float>(), B, H, Hkv, D, max_ctx,
                                   static_cast<float>(scale), window);
  } else {
    TORCH_CHECK(kv_cache.scalar_type() == torch::kBFloat16, "cache: float32 or bfloat16");
    const uint16_t* base = reinterpret_cast<const uint16_t*>(kv_cache.data_ptr());
    decode_attention_kernel<uint16_t>(q.data_ptr<float>(), base, base + S * Hkv * D,
                                      slots.data_ptr<int64_t>(), lens.data_ptr<int64_t>(),
                                      out.data_ptr<float>(), B, H, Hkv, D, max_ctx,
                                      static_cast<float>(scale), window);
  }
  return out;
}
