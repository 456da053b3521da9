// W8A8 linear in one call: per-row dynamic int8 quantization of the activations,
// the int8 GEMM (at::_int_mm: oneDNN with VNNI), and the float epilogue.
// Replaces nine small ATen calls per projection with three passes.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>

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
  auto acc = at::_int_mm(xq, qweight.t());  // (M, N) int32
  auto out = torch::empty({M, N}, x.options());
  const int32_t* ap = acc.data_ptr<int32_t>();
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
      const int32_t* a = ap + m * N;
      float* o = op + m * N;
      if (bp) {
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) o[n] = static_cast<float>(a[n]) * s * cs[n] + bp[n];
      } else {
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) o[n] = static_cast<float>(a[n]) * s * cs[n];
      }
    }
  });
  return out;
}
