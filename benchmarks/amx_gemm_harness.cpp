// The AMX block GEMM (src/tokenmill/model/kernels/isa_amx.cpp) alone, outside Python and
// torch: random Q4_1 blocks and float32 activations, prepare + GEMM timed over many
// calls, and the result checked against a float64 dequantized reference. For taking the
// kernel apart (docs/performance.md, "What bounds the AMX block GEMM"): build a copy of
// isa_amx.cpp with one part removed and compare the two binaries, alternated.
//
//   g++ -O3 -std=c++17 -mf16c -Isrc/tokenmill/model/kernels \
//       benchmarks/amx_gemm_harness.cpp src/tokenmill/model/kernels/isa_amx.cpp -o /tmp/amx
//   taskset -c 1 /tmp/amx M N K [calls]     # e.g. 112 3072 576 40 (gate_up)
//
// Prints the best call's time, per 16 x 16 x 32 unit, prepare's share, and the largest
// error relative to the largest output. Needs a CPU with AMX-BF16 (and Linux, which
// hands out the tile state on request).
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "quant.h"

namespace tokenmill {
namespace quant {
// The AMX table copies the AVX-512 one and adds its GEMM; only the GEMM runs here.
const Kernels* avx512_kernels() {
  static Kernels none{};
  return &none;
}
}  // namespace quant
}  // namespace tokenmill

namespace tq = tokenmill::quant;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s M N K [calls]\n", argv[0]);
    return 2;
  }
  const int64_t M = std::atoll(argv[1]), N = std::atoll(argv[2]), K = std::atoll(argv[3]);
  const int calls = argc > 4 ? std::atoi(argv[4]) : 40;
  const tq::Kernels* k = tq::amx_kernels();
  if (k == nullptr || K % 32 != 0 || N % 16 != 0) {
    std::fprintf(stderr, "needs AMX, K a multiple of 32 and N of 16\n");
    return 1;
  }
  // Q4_1 blocks: float16 scale and min, then 16 bytes of nibbles (element j low, j + 16 high).
  const int64_t nb = K / 32, row_bytes = nb * 20;
  std::mt19937 rng(1);
  std::vector<uint8_t> w(N * row_bytes);
  for (auto& byte : w) byte = static_cast<uint8_t>(rng());
  for (int64_t i = 0; i < N * nb; ++i) {
    const uint16_t d = static_cast<uint16_t>(0x2000 + (rng() & 0x3FF));  // ~0.008
    const uint16_t mn = static_cast<uint16_t>(0xA000 + (rng() & 0x3FF));  // ~-0.008
    std::memcpy(&w[i * 20], &d, 2);
    std::memcpy(&w[i * 20 + 2], &mn, 2);
  }
  std::vector<float> x(M * K), y(M * N);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng);
  const tq::Problem p{tq::kQ4_1, w.data(), row_bytes, K, x.data(), K, M, y.data(), N};
  std::vector<uint8_t> scratch(k->blocks_scratch(M, K));

  double best = 1e30, best_prepare = 1e30;
  for (int c = 0; c < calls; ++c) {
    auto t0 = std::chrono::steady_clock::now();
    k->blocks_prepare(p, scratch.data());
    best_prepare = std::min(best_prepare, seconds_since(t0));
    k->gemm_blocks(p, scratch.data(), 0, N);
    best = std::min(best, seconds_since(t0));
  }

  double worst = 0, largest = 0;
  for (int64_t m = 0; m < M; m += 7) {
    for (int64_t n = 0; n < N; n += 13) {
      double s = 0;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = &w[(n * nb + b) * 20];
        uint16_t dh, mh;
        std::memcpy(&dh, blk, 2);
        std::memcpy(&mh, blk + 2, 2);
        const double d = _cvtsh_ss(dh), mn = _cvtsh_ss(mh);
        for (int j = 0; j < 16; ++j) {
          s += (d * (blk[4 + j] & 15) + mn) * x[m * K + b * 32 + j];
          s += (d * (blk[4 + j] >> 4) + mn) * x[m * K + b * 32 + j + 16];
        }
      }
      worst = std::max(worst, std::abs(s - y[m * N + n]));
      largest = std::max(largest, std::abs(s));
    }
  }
  const int64_t units = (M + 15) / 16 * (N / 16) * nb;
  std::printf("M=%lld N=%lld K=%lld: %.1f us (%.1f ns a unit), prepare %.1f us; error %.2e\n",
              static_cast<long long>(M), static_cast<long long>(N), static_cast<long long>(K),
              best * 1e6, best * 1e9 / units, best_prepare * 1e6, worst / largest);
  return 0;
}
