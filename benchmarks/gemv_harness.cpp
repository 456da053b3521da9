// The AVX-512 gemv alone, outside Python and torch: y = x W^T for every layer matrix of
// SmolLM2-135M (30 layers of qkv 960 x 576, o 576 x 576, gate_up 3072 x 576, down
// 576 x 1536) in one GGUF block type, random blocks with sane float16 scales, as a
// decode step of M rows reads them. For taking the kernel apart: build it against a copy
// of the kernel sources with one part changed and compare the two binaries, alternated;
// equal checksums for equal inputs mean the change kept the bits.
//
//   g++ -O3 -std=c++17 -Isrc/tokenmill/model/kernels -o /tmp/gemv
//       benchmarks/gemv_harness.cpp src/tokenmill/model/kernels/isa_avx512.cpp
//   taskset -c 1 /tmp/gemv [M] [type id: 2 Q4_0, 3 Q4_1, 8 Q8_0, 259 Q4_1F] [reuse]
//
// reuse N: cycle over the first N layers only (N = 1 keeps W in L3 on most server CPUs,
// ~2.2 MB), which leaves the arithmetic. Prints the median of 11 passes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "quant.h"

using namespace tokenmill::quant;

namespace {
uint16_t half_of(float f) {  // positive normal values only
  uint32_t b;
  std::memcpy(&b, &f, 4);
  const uint32_t e = ((b >> 23) & 0xFF) - 127 + 15;
  return static_cast<uint16_t>((e << 10) | ((b >> 13) & 0x3FF));
}
}  // namespace

int main(int argc, char** argv) {
  const int M = argc > 1 ? std::atoi(argv[1]) : 1;
  const int type = argc > 2 ? std::atoi(argv[2]) : kQ4_1;
  const int reuse = argc > 3 ? std::atoi(argv[3]) : 0;
  TypeInfo ti;
  if (!type_info(type, &ti) || M < 1 || reuse < 0 || reuse > 30) {
    std::fprintf(stderr, "usage: %s [M] [type id] [reuse 0-30]\n", argv[0]);
    return 2;
  }
  const Kernels* k = avx512_kernels();
  if (k == nullptr) {
    std::fprintf(stderr, "no AVX-512 kernels in this build\n");
    return 2;
  }
  struct Mat {
    int N, K;
    std::vector<uint8_t> w;
  };
  std::vector<Mat> mats;
  std::mt19937 rng(1);
  const int shapes[4][2] = {{960, 576}, {576, 576}, {3072, 576}, {576, 1536}};
  // Q4_1F's matrices are Q4_1's, repacked: the same weights, so the same checksum.
  const int made = type == kQ4_1F ? kQ4_1 : type;
  TypeInfo mi;
  type_info(made, &mi);
  for (int l = 0; l < 30; ++l) {
    for (const auto& s : shapes) {
      Mat m{s[0], s[1], {}};
      const int64_t rb = s[1] / mi.block_elems * mi.block_bytes;
      m.w.resize(rb * s[0]);
      for (auto& byte : m.w) byte = static_cast<uint8_t>(rng());
      for (int64_t at = 0; at < rb * s[0]; at += mi.block_bytes) {
        const uint16_t d = half_of(0.001f + (rng() % 1000) * 1e-5f);
        const uint16_t mn = half_of(0.01f + (rng() % 1000) * 1e-5f);
        std::memcpy(&m.w[at], &d, 2);
        if (made == kQ4_1) std::memcpy(&m.w[at + 2], &mn, 2);
      }
      if (type == kQ4_1F) {
        std::vector<uint8_t> q(m.w.size() / 20 * 24);
        for (size_t b = 0; b < m.w.size() / 20; ++b) {
          const float dm[2] = {half_to_float(read_u16(&m.w[20 * b])),
                               half_to_float(read_u16(&m.w[20 * b + 2]))};
          std::memcpy(&q[24 * b], dm, 8);
          std::memcpy(&q[24 * b + 8], &m.w[20 * b + 4], 16);
        }
        m.w = std::move(q);
      }
      mats.push_back(std::move(m));
    }
  }
  std::vector<float> x(M * 1536), y(M * 3072);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng);
  double checksum = 0;
  auto pass = [&] {
    for (size_t i = 0; i < mats.size(); ++i) {
      const Mat& m = mats[reuse > 0 ? i % (4 * reuse) : i];
      const Problem p{type, m.w.data(), m.K / ti.block_elems * ti.block_bytes, m.K,
                      x.data(), 1536, M, y.data(), 3072};
      k->gemv(p, 0, m.N);
      for (int r = 0; r < M; ++r) checksum += y[r * 3072] + y[r * 3072 + m.N - 1];
    }
  };
  pass();
  const double first = checksum;
  std::vector<double> seconds;
  for (int r = 0; r < 11; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    pass();
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(seconds.begin(), seconds.end());
  size_t bytes = 0;
  for (size_t i = 0; i < mats.size(); ++i) bytes += mats[reuse > 0 ? i % (4 * reuse) : i].w.size();
  std::printf("M=%d type %d%s: %.3f ms (best %.3f), %.1f GB/s of weights, checksum %.6f\n", M,
              type, reuse ? " (reused layers)" : "", seconds[5] * 1e3, seconds[0] * 1e3,
              bytes / seconds[5] / 1e9, first);
  return 0;
}
