// Which instruction set runs: what the CPU (cpuid) and the OS (xgetbv) support, and the
// kernel tables of each set this build has. Included by bindings.cpp.
#include <string>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

#include "ops.h"
#include "quant.h"

namespace tokenmill {
namespace {

struct Features {
  bool avx2 = false;    // AVX2 + FMA + F16C, with the OS saving YMM state
  bool avx512 = false;  // AVX-512 F/BW/VL/DQ, with the OS saving ZMM state
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool amx = false;
};

Features detect() {
  Features f;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27), f16c = c & (1u << 29);
  if (!osxsave) return f;
  unsigned xlo, xhi;
  __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  const bool ymm_os = (xlo & 0x6) == 0x6;              // SSE and AVX state
  const bool zmm_os = ymm_os && (xlo & 0xE0) == 0xE0;  // opmask and ZMM state
  const bool tile_os = (xlo & 0x60000) == 0x60000;     // AMX tile state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), avx512dq = b & (1u << 17);
  const bool avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  f.avx2 = ymm_os && avx2 && fma && f16c;
  f.avx512 = f.avx2 && zmm_os && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512_vnni = f.avx512 && (c & (1u << 11));
  f.amx = tile_os && (d & (1u << 24)) && (d & (1u << 22));  // AMX-TILE and AMX-BF16
  unsigned a1, b1, c1, d1;
  if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) f.avx512_bf16 = f.avx512 && (a1 & (1u << 5));
#endif
  return f;
}

const Features& features() {
  static const Features f = detect();
  return f;
}

// One instruction set's kernel tables.
struct Isa {
  const char* name;
  const quant::Kernels* quant;
  const ops::Ops* ops;
};

// The sets this CPU and build can run, fastest first; the portable one is always last.
const std::vector<Isa>& runnable() {
  static const std::vector<Isa> all = [] {
    std::vector<Isa> out;
    const Features& f = features();
    if (f.amx && f.avx512 && quant::amx_kernels() && ops::avx512_ops()) {
      out.push_back({"amx", quant::amx_kernels(), ops::avx512_ops()});
    }
    if (f.avx512 && quant::avx512_kernels() && ops::avx512_ops()) {
      out.push_back({"avx512", quant::avx512_kernels(), ops::avx512_ops()});
    }
    if (f.avx2 && quant::avx2_kernels() && ops::avx2_ops()) {
      out.push_back({"avx2", quant::avx2_kernels(), ops::avx2_ops()});
    }
    out.push_back({"scalar", quant::scalar_kernels(), ops::scalar_ops()});
    return out;
  }();
  return all;
}

// What an empty variant name means: the fastest, until select_isa says otherwise.
std::string& default_isa() {
  static std::string name;
  return name;
}

const Isa& pick_isa(const std::string& variant) {
  const auto& all = runnable();
  const std::string& name = variant.empty() ? default_isa() : variant;
  if (name.empty()) return all.front();
  for (const Isa& isa : all) {
    if (name == isa.name) return isa;
  }
  TORCH_CHECK(false, "kernel variant '", name, "' cannot run on this CPU or build");
  return all.back();
}

}  // namespace
}  // namespace tokenmill

// Make `variant` what an empty variant name means (called once, when a model loads).
void select_quant_variant(const std::string& variant) {
  tokenmill::pick_isa(variant);
  // Written only on a change: a model loading while another serves (the registry)
  // selects again, and the serving threads read the name.
  if (tokenmill::default_isa() != variant) tokenmill::default_isa() = variant;
}

// The instruction sets this CPU and build can run, fastest first.
std::vector<std::string> quant_variants() {
  std::vector<std::string> out;
  for (const auto& isa : tokenmill::runnable()) out.emplace_back(isa.name);
  return out;
}

// What the CPU reports, for the start-up log.
std::vector<std::string> cpu_features() {
  const auto& f = tokenmill::features();
  std::vector<std::string> out;
  if (f.avx2) out.emplace_back("avx2");
  if (f.avx512) out.emplace_back("avx512");
  if (f.avx512_vnni) out.emplace_back("avx512_vnni");
  if (f.avx512_bf16) out.emplace_back("avx512_bf16");
  if (f.amx) out.emplace_back("amx_bf16");
  return out;
}
