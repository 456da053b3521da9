// Decode attention (ops_simd.h's touch_kv and attend, AVX-512 build, called as
// layer_ops.cpp's decode_attention calls them) alone, outside Python and torch:
// the default model's shapes (30 layers, 3 kv heads of 64, 3 query heads each) over a
// 1 GiB float32 KV pool like the server's, B sequences of L positions in blocks of 16.
// For taking the kernel apart: build it against a copy of the kernel sources with one
// part changed and compare the two binaries, alternated.
//
//   g++ -O3 -std=c++17 -Isrc/tokenmill/model/kernels -o /tmp/attn
//       benchmarks/attention_harness.cpp src/tokenmill/model/kernels/isa_avx512.cpp
//   taskset -c 1 /tmp/attn B L [scattered|shared] [huge|small]   # e.g. 32 164
//
// scattered (the default): each sequence's blocks drawn at random from the pool, so a
// step reads B * L * 46 KB from memory. shared: every sequence reads the same blocks,
// which then stay in L2, leaving the arithmetic. huge / small: the pool madvised to
// transparent huge pages, or left in 4 KB pages as the server's pool is (huge pages
// read it ~9% faster here, but committing 1 GiB of them at start took the server's
// model load from 5 s to 18-20 s). Prints the median of 9
// passes over all layers, the bytes a pass reads per second, and a checksum of the
// outputs (equal checksums for equal inputs: a changed kernel that keeps the bits).
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "ops.h"

using tokenmill::ops::AttendArgs;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s B L [scattered|shared] [huge|small]\n", argv[0]);
    return 2;
  }
  const int B = std::atoi(argv[1]), L = std::atoi(argv[2]);
  const bool shared = argc > 3 && std::strcmp(argv[3], "shared") == 0;
  const bool huge = !(argc > 4 && std::strcmp(argv[4], "small") == 0);
  const int layers = 30, Hkv = 3, G = 3, D = 64, bs = 16;
  const int64_t slots = (int64_t{1} << 30) / (2 * layers * Hkv * D * 4);
  const int64_t nblocks = slots / bs, plane = slots * Hkv * D;
  const int nb = (L + bs - 1) / bs;
  if (B < 1 || L < 1 || int64_t{B} * nb >= nblocks) {
    std::fprintf(stderr, "B * L must fit the 1 GiB pool\n");
    return 2;
  }
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  std::vector<float*> caches(layers);
  const size_t page = size_t{2} << 20;
  const size_t bytes = (2 * plane * sizeof(float) + page - 1) / page * page;
  for (auto& c : caches) {
    c = static_cast<float*>(std::aligned_alloc(page, bytes));
    if (huge) madvise(c, bytes, MADV_HUGEPAGE);
    for (int64_t i = 0; i < 2 * plane; ++i) c[i] = i % 7 ? 0.01f * (i % 13) : normal(rng);
  }
  std::vector<int64_t> ids(nblocks - 1);
  for (int64_t i = 0; i < nblocks - 1; ++i) ids[i] = i + 1;  // block 0 is the null block
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<int64_t> table(B * nb);
  for (int i = 0; i < B * nb; ++i) table[i] = shared ? ids[i % nb] : ids[i];
  std::vector<float> q(B * Hkv * G * D), out(q.size()), scratch(G * L);
  for (auto& x : q) x = normal(rng);
  const auto* ops = tokenmill::ops::avx512_ops();
  auto pass = [&] {
    for (int layer = 0; layer < layers; ++layer) {
      for (int b = 0; b < B; ++b) {
        for (int h = 0; h < Hkv; ++h) {
          const int64_t at = (b * Hkv + h) * G * D;
          AttendArgs a{q.data() + at, caches[layer], caches[layer] + plane,
                       table.data() + b * nb, bs, L, G, D, Hkv, h, 0.125f,
                       out.data() + at, scratch.data(), 0};
          if (tokenmill::ops::touch_whole_sequence(a, sizeof(float))) {  // as decode_attention
            if (h == 0) ops->touch_kv(a, sizeof(float), 0, Hkv);
            a.touched = true;
          }
          ops->attend_f32(a);
        }
      }
    }
  };
  pass();
  std::vector<double> seconds;
  for (int r = 0; r < 9; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    pass();
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(seconds.begin(), seconds.end());
  const double gb = double(B) * L * layers * 2 * Hkv * D * sizeof(float) / 1e9;
  double checksum = 0;
  for (float x : out) checksum += x;
  std::printf("B=%d L=%d %s %s pages: %.2f ms (best %.2f), %.1f GB/s, checksum %.6f\n", B, L,
              shared ? "shared" : "scattered", huge ? "huge" : "4 KB", seconds[4] * 1e3,
              seconds[0] * 1e3, gb / seconds[4], checksum);
  return 0;
}
