#include "cpu_info.hpp"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define UNIRT_X86 1
#if defined(_MSC_VER)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace unirt {
namespace {

#ifdef UNIRT_X86
struct Regs {
  uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
};

Regs cpuid(uint32_t leaf, uint32_t subleaf = 0) {
  Regs r;
#if defined(_MSC_VER)
  int out[4];
  __cpuidex(out, static_cast<int>(leaf), static_cast<int>(subleaf));
  r.eax = out[0]; r.ebx = out[1]; r.ecx = out[2]; r.edx = out[3];
#else
  __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
#endif
  return r;
}

bool bit(uint32_t reg, int n) { return (reg >> n) & 1u; }

// XCR0 says which register states the OS saves; AVX/AVX-512/AMX are only usable when it does.
uint64_t xgetbv0() {
#if defined(_MSC_VER)
  return _xgetbv(0);
#else
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
#endif
}

void detect_x86(CpuInfo& info) {
  Regs r0 = cpuid(0);
  char vendor[13] = {0};
  std::memcpy(vendor + 0, &r0.ebx, 4);
  std::memcpy(vendor + 4, &r0.edx, 4);
  std::memcpy(vendor + 8, &r0.ecx, 4);
  info.vendor = vendor;
  const uint32_t max_leaf = r0.eax;

  Regs ext = cpuid(0x80000000u);
  if (ext.eax >= 0x80000004u) {
    char brand[49] = {0};
    for (uint32_t i = 0; i < 3; ++i) {
      Regs b = cpuid(0x80000002u + i);
      std::memcpy(brand + 16 * i + 0, &b.eax, 4);
      std::memcpy(brand + 16 * i + 4, &b.ebx, 4);
      std::memcpy(brand + 16 * i + 8, &b.ecx, 4);
      std::memcpy(brand + 16 * i + 12, &b.edx, 4);
    }
    std::string s(brand);
    const auto first = s.find_first_not_of(' ');
    info.brand = first == std::string::npos ? "" : s.substr(first);
  }
  if (max_leaf < 1) return;

  auto& f = info.features;
  Regs r1 = cpuid(1);
  if (bit(r1.edx, 26)) f.push_back("sse2");
  if (bit(r1.ecx, 19)) f.push_back("sse4_1");
  if (bit(r1.ecx, 20)) f.push_back("sse4_2");
  const bool osxsave = bit(r1.ecx, 27);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_avx = (xcr0 & 0x6) == 0x6;
  const bool os_avx512 = (xcr0 & 0xE6) == 0xE6;
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;
  if (os_avx && bit(r1.ecx, 28)) f.push_back("avx");
  if (os_avx && bit(r1.ecx, 12)) f.push_back("fma");
  if (os_avx && bit(r1.ecx, 29)) f.push_back("f16c");
  if (max_leaf < 7) return;

  Regs r7 = cpuid(7, 0);
  if (os_avx && bit(r7.ebx, 5)) f.push_back("avx2");
  if (os_avx512) {
    if (bit(r7.ebx, 16)) f.push_back("avx512f");
    if (bit(r7.ebx, 30)) f.push_back("avx512bw");
    if (bit(r7.ecx, 11)) f.push_back("avx512_vnni");
    if (bit(r7.edx, 23)) f.push_back("avx512_fp16");
  }
  if (os_amx) {
    if (bit(r7.edx, 24)) f.push_back("amx_tile");
    if (bit(r7.edx, 22)) f.push_back("amx_bf16");
    if (bit(r7.edx, 25)) f.push_back("amx_int8");
  }
  Regs r71 = cpuid(7, 1);
  if (os_avx && bit(r71.eax, 4)) f.push_back("avx_vnni");
  if (os_avx512 && bit(r71.eax, 5)) f.push_back("avx512_bf16");
}
#endif

#if defined(__aarch64__) && defined(__linux__)
void detect_arm_linux(CpuInfo& info) {
  info.vendor = "ARM";
  const unsigned long hw = getauxval(AT_HWCAP);
  auto& f = info.features;
  f.push_back("neon");  // mandatory on AArch64
#ifdef HWCAP_FPHP
  if (hw & HWCAP_FPHP) f.push_back("fp16");
#endif
#ifdef HWCAP_ASIMDDP
  if (hw & HWCAP_ASIMDDP) f.push_back("dotprod");
#endif
#ifdef HWCAP_SVE
  if (hw & HWCAP_SVE) f.push_back("sve");
#endif
#ifdef AT_HWCAP2
  const unsigned long hw2 = getauxval(AT_HWCAP2);
#ifdef HWCAP2_I8MM
  if (hw2 & HWCAP2_I8MM) f.push_back("i8mm");
#endif
#ifdef HWCAP2_BF16
  if (hw2 & HWCAP2_BF16) f.push_back("bf16");
#endif
#ifdef HWCAP2_SME
  if (hw2 & HWCAP2_SME) f.push_back("sme");
#endif
  (void)hw2;
#endif
  (void)hw;
}
#endif

}  // namespace

CpuInfo detect_cpu() {
  CpuInfo info;
#if defined(__x86_64__) || defined(_M_X64)
  info.arch = "x86_64";
#elif defined(__i386__) || defined(_M_IX86)
  info.arch = "x86";
#elif defined(__aarch64__) || defined(_M_ARM64)
  info.arch = "aarch64";
#elif defined(__arm__)
  info.arch = "arm";
#else
  info.arch = "unknown";
#endif
#ifdef UNIRT_X86
  detect_x86(info);
#elif defined(__aarch64__) && defined(__linux__)
  detect_arm_linux(info);
#elif defined(__aarch64__) && defined(__APPLE__)
  info.vendor = "Apple";
  info.features = {"neon", "fp16", "dotprod"};
#endif
  return info;
}

}  // namespace unirt
