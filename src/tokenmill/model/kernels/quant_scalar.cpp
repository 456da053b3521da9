// Portable kernels: plain C++ for any CPU (the compiler may vectorise them for the
// baseline target only). They decode each block to float32 with the reference formulas
// of gguf-py / ggml and take dot products; the fast variants are checked against them.
#include <cstring>
#include <vector>

#include "quant.h"

namespace tokenmill {
namespace quant {

namespace {

// Q4_K packs eight 6-bit scales and eight 6-bit mins into 12 bytes.
inline void q4k_scale_min(const uint8_t* s, int j, int* sc, int* mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// One block of `type` -> its block_elems floats.
void decode_block(int type, const uint8_t* b, float* out) {
  switch (type) {
    case kQ4_0: {
      const float d = half_to_float(read_u16(b));
      const uint8_t* qs = b + 2;
      for (int j = 0; j < 16; ++j) {
        out[j] = d * static_cast<float>((qs[j] & 0xF) - 8);
        out[j + 16] = d * static_cast<float>((qs[j] >> 4) - 8);
      }
      return;
    }
    case kQ4_1: {
      const float d = half_to_float(read_u16(b)), m = half_to_float(read_u16(b + 2));
      const uint8_t* qs = b + 4;
      for (int j = 0; j < 16; ++j) {
        out[j] = d * static_cast<float>(qs[j] & 0xF) + m;
        out[j + 16] = d * static_cast<float>(qs[j] >> 4) + m;
      }
      return;
    }
    case kQ4_1F: {
      const float d = read_f32(b), m = read_f32(b + 4);
      const uint8_t* qs = b + 8;
      for (int j = 0; j < 16; ++j) {
        out[j] = d * static_cast<float>(qs[j] & 0xF) + m;
        out[j + 16] = d * static_cast<float>(qs[j] >> 4) + m;
      }
      return;
    }
    case kQ5_0: {
      const float d = half_to_float(read_u16(b));
      uint32_t qh;
      std::memcpy(&qh, b + 2, 4);
      const uint8_t* qs = b + 6;
      for (int j = 0; j < 16; ++j) {
        const int lo = (qs[j] & 0xF) | (((qh >> j) & 1) << 4);
        const int hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
        out[j] = d * static_cast<float>(lo - 16);
        out[j + 16] = d * static_cast<float>(hi - 16);
      }
      return;
    }
    case kQ8_0: {
      const float d = half_to_float(read_u16(b));
      const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
      for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(qs[j]) * d;
      return;
    }
    case kQ4_K: {
      const float d = half_to_float(read_u16(b)), dmin = half_to_float(read_u16(b + 2));
      const uint8_t* scales = b + 4;
      const uint8_t* qs = b + 16;
      for (int c = 0; c < 4; ++c) {
        int sc0, m0, sc1, m1;
        q4k_scale_min(scales, 2 * c, &sc0, &m0);
        q4k_scale_min(scales, 2 * c + 1, &sc1, &m1);
        const float d0 = d * sc0, o0 = dmin * m0, d1 = d * sc1, o1 = dmin * m1;
        for (int l = 0; l < 32; ++l) {
          out[64 * c + l] = d0 * static_cast<float>(qs[32 * c + l] & 0xF) - o0;
          out[64 * c + 32 + l] = d1 * static_cast<float>(qs[32 * c + l] >> 4) - o1;
        }
      }
      return;
    }
    case kQ6_K: {
      const uint8_t* ql = b;
      const uint8_t* qh = b + 128;
      const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
      const float d = half_to_float(read_u16(b + 208));
      for (int h = 0; h < 2; ++h) {
        for (int l = 0; l < 32; ++l) {
          const uint8_t a = ql[64 * h + l], c = ql[64 * h + 32 + l], e = qh[32 * h + l];
          const int q[4] = {(a & 0xF) | ((e & 3) << 4), (c & 0xF) | (((e >> 2) & 3) << 4),
                            (a >> 4) | (((e >> 4) & 3) << 4), (c >> 4) | (((e >> 6) & 3) << 4)};
          for (int g = 0; g < 4; ++g) {
            const int i = 128 * h + 32 * g + l;
            out[i] = d * static_cast<float>(sc[i / 16]) * static_cast<float>(q[g] - 32);
          }
        }
      }
      return;
    }
    default:
      return;
  }
}

void dequant(int type, const uint8_t* w, int64_t row_bytes, int64_t K, int64_t n0, int64_t n1,
             float* out) {
  TypeInfo info{32, 34, 32};
  type_info(type, &info);
  const int64_t nb = K / info.block_elems;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w + n * row_bytes;
    float* o = out + (n - n0) * K;
    for (int64_t b = 0; b < nb; ++b) {
      decode_block(type, row + b * info.block_bytes, o + b * info.block_elems);
    }
  }
}

// Both paths dequantize whole rows and take the same dot product (dot below), so an
// output never depends on the batch or the method.
inline float dot(const float* x, const float* w, int64_t K) {
  float s = 0.f;
  for (int64_t k = 0; k < K; ++k) s += x[k] * w[k];
  return s;
}

void gemv(const Problem& p, int64_t n0, int64_t n1) {
  std::vector<float> row(p.K);
  for (int64_t n = n0; n < n1; ++n) {
    dequant(p.type, p.w, p.row_bytes, p.K, n, n + 1, row.data());
    for (int64_t m = 0; m < p.M; ++m) p.y[m * p.ldy + n] = dot(p.x + m * p.ldx, row.data(), p.K);
  }
}

void gemm_tile(const float* x, int64_t ldx, int64_t M, const float* wt, int64_t n, int64_t K,
               float* y, int64_t ldy) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t j = 0; j < n; ++j) y[m * ldy + j] = dot(x + m * ldx, wt + j * K, K);
  }
}

const Kernels kScalar = {"scalar", gemv, dequant, gemm_tile, 3};

}  // namespace

const Kernels* scalar_kernels() { return &kScalar; }

}  // namespace quant
}  // namespace tokenmill
