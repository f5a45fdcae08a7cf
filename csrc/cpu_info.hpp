// What the CPU can do, read from the hardware itself (cpuid on x86, auxv on ARM Linux).
#pragma once
#include <string>
#include <vector>

namespace unirt {

struct CpuInfo {
  std::string arch;                   // "x86_64", "aarch64", ...
  std::string vendor;                 // "GenuineIntel", "AuthenticAMD", "ARM", ... or "" if unknown
  std::string brand;                  // marketing name where the CPU reports one
  std::vector<std::string> features;  // lower-case feature names, e.g. "avx2", "amx_bf16", "neon"
};

CpuInfo detect_cpu();

}  // namespace unirt
