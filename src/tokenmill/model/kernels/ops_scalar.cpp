// Portable versions of the layer operators (see ops.h); the reference the SIMD ones are
// checked against.
#include <cmath>
#include <cstring>
#include <limits>

#include "ops.h"

namespace tokenmill {
namespace ops {
namespace {

void rmsnorm(const float* x, float* residual, const float* w, float eps, int64_t D,
             float* out) {
  const float* src = x;
  if (residual != nullptr) {
    for (int64_t i = 0; i < D; ++i) residual[i] += x[i];
    src = residual;
  }
  float ss = 0.f;
  for (int64_t i = 0; i < D; ++i) ss += src[i] * src[i];
  const float inv = 1.f / std::sqrt(ss / static_cast<float>(D) + eps);
  for (int64_t i = 0; i < D; ++i) out[i] = (src[i] * inv) * w[i];
}

void silu_mul(const float* gate_up, int64_t I, float* out) {
  for (int64_t i = 0; i < I; ++i) {
    const float g = gate_up[i];
    out[i] = g / (1.f + std::exp(-g)) * gate_up[I + i];
  }
}

void rope(float* x, int64_t heads, int64_t D, const float* cos, const float* sin) {
  const int64_t half = D / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* a = x + h * D;
    float* b = a + half;
    for (int64_t i = 0; i < half; ++i) {
      const float x1 = a[i], x2 = b[i];
      a[i] = x1 * cos[i] - x2 * sin[i];
      b[i] = x2 * cos[i] + x1 * sin[i];
    }
  }
}

inline float load(const float* p, int64_t i) { return p[i]; }

inline float load(const uint16_t* p, int64_t i) {
  const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

template <typename T>
void attend(const AttendArgs& a) {
  const T* kc = static_cast<const T*>(a.k_base);
  const T* vc = static_cast<const T*>(a.v_base);
  const int64_t n = a.L - a.first;
  for (int64_t g = 0; g < a.G; ++g) {
    const float* q = a.q + g * a.D;
    float* sc = a.scratch + g * n;
    float mx = std::numeric_limits<float>::lowest();
    for (int64_t j = 0; j < n; ++j) {
      const T* k = kc + (slot_of(a, a.first + j) * a.Hkv + a.h) * a.D;
      float s = 0.f;
      for (int64_t d = 0; d < a.D; ++d) s += q[d] * load(k, d);
      sc[j] = s * a.scale;
      mx = sc[j] > mx ? sc[j] : mx;
    }
    float sum = 0.f;
    for (int64_t j = 0; j < n; ++j) {
      sc[j] = std::exp(sc[j] - mx);
      sum += sc[j];
    }
    float* o = a.out + g * a.D;
    for (int64_t d = 0; d < a.D; ++d) o[d] = 0.f;
    for (int64_t j = 0; j < n; ++j) {
      const T* v = vc + (slot_of(a, a.first + j) * a.Hkv + a.h) * a.D;
      for (int64_t d = 0; d < a.D; ++d) o[d] += sc[j] * load(v, d);
    }
    const float inv = 1.f / sum;
    for (int64_t d = 0; d < a.D; ++d) o[d] *= inv;
  }
}

int64_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) best = x[i] > x[best] ? i : best;
  return best;
}

// No prefill kernel: the Python layer runs ATen's attention on CPUs this old.
const Ops kScalar = {"scalar", rmsnorm, silu_mul, rope, attend<float>, attend<uint16_t>,
                     nullptr,  nullptr, 0,    argmax};

}  // namespace

const Ops* scalar_ops() { return &kScalar; }

}  // namespace ops
}  // namespace tokenmill
