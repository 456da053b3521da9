// W8A8 linear in one call: per-row dynamic int8 quantization of the activations,
// the int8 product, and the float epilogue. Replaces nine small ATen calls per
// projection with three passes.
//
// The product: at::_int_mm (oneDNN) where the CPU has VNNI or AMX. Without them oneDNN's
// int8 GEMM is pathological on CPU (Zen 3: 1 s for the 49152 x 576 output head at 32
// rows, 28 s at 256 rows, against 0.14 s and 1.2 s in float32, and worse per row as M
// grows), so there the int8 codes are widened to float32 a tile of weight rows at a time
// and multiplied with the quant kernels' float tile GEMM. Every product of two int8
// codes is an integer below 2^14 and the sums stay integers while below 2^24 (|sum| <=
// 127 * 127 * K, reached only if every code saturates with one sign), so both ways give
// the same int32 sums and the result still depends on row m alone.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>

#include "quant.h"

namespace {

// acc (M, N) float32 = xq (M, K) int8 @ qweight (N, K) int8 ^T, through float32 tiles.
torch::Tensor int8_mm_float_tiles(const torch::Tensor& xq, const torch::Tensor& qweight,
                                  const tokenmill::quant::Kernels* k) {
  const int64_t M = xq.size(0), K = xq.size(1), N = qweight.size(0);
  auto xf = xq.to(torch::kFloat32);
  auto acc = torch::empty({M, N}, xf.options());
  const float* xp = xf.data_ptr<float>();
  const int8_t* wp = qweight.data_ptr<int8_t>();
  float* ap = acc.data_ptr<float>();
  const int64_t T = tokenmill::quant::tile_rows(K, N, at::get_num_threads());
  const int64_t tiles = (N + T - 1) / T;
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    tokenmill::quant::TileBuffer buf(T * K);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = t * T, n1 = std::min(N, n0 + T);
      const int8_t* src = wp + n0 * K;
      float* dst = buf.data();
      const int64_t count = (n1 - n0) * K;
#pragma omp simd
      for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(src[i]);
      k->gemm_tile(xp, K, M, dst, n1 - n0, K, ap + n0, N);
    }
  });
  return acc;
}

}  // namespace

torch::Tensor int8_linear(torch::Tensor x, torch::Tensor qweight, torch::Tensor scale,
                          c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32, "x: (M, K) float32");
  TORCH_CHECK(qweight.dim() == 2 && qweight.scalar_type() == torch::kInt8, "qweight: (N, K) int8");
  x = x.contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = qweight.size(0);
  TORCH_CHECK(qweight.size(1) == K, "x and qweight disagree on K");
  auto xq = torch::empty({M, K}, x.options().dtype(torch::kInt8));
  auto row_scale = torch::empty({M}, x.options());
  const float* xp = x.data_ptr<float>();
  int8_t* qp = xq.data_ptr<int8_t>();
  float* rs = row_scale.data_ptr<float>();
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const float* r = xp + m * K;
      float amax = 0.f;
#pragma omp simd reduction(max : amax)
      for (int64_t k = 0; k < K; ++k) amax = std::fmax(amax, std::fabs(r[k]));
      const float s = amax > 1e-12f ? amax / 127.f : 1e-12f / 127.f;
      const float inv = 1.f / s;
      int8_t* q = qp + m * K;
#pragma omp simd
      for (int64_t k = 0; k < K; ++k) q[k] = static_cast<int8_t>(std::nearbyint(r[k] * inv));
      rs[m] = s;
    }
  });
  const tokenmill::Features& f = tokenmill::features();
  const tokenmill::quant::Kernels* k = tokenmill::pick_isa("").quant;
  // gemm_tile needs K to be a multiple of the vector width (16 covers every set).
  const bool native_int8 = f.avx512_vnni || f.amx || K % 16 != 0;
  qweight = qweight.contiguous();
  auto acc = native_int8 ? at::_int_mm(xq, qweight.t()).to(torch::kFloat32)
                         : int8_mm_float_tiles(xq, qweight, k);  // (M, N) integer sums
  auto out = torch::empty({M, N}, x.options());
  const float* ap = acc.data_ptr<float>();
  const float* cs = scale.contiguous().data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float* bp = nullptr;
  torch::Tensor b;
  if (bias.has_value() && bias->defined()) {
    b = bias->contiguous();
    bp = b.data_ptr<float>();
  }
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const float s = rs[m];
      const float* a = ap + m * N;
      float* o = op + m * N;
      if (bp) {
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) o[n] = a[n] * s * cs[n] + bp[n];
      } else {
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) o[n] = a[n] * s * cs[n];
      }
    }
  });
  return out;
}
