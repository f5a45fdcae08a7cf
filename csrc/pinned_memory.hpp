// Page-locked (pinned) host memory from the CUDA runtime, loaded at run time (dlopen), so unirt builds and runs
// without CUDA and uses it where it is installed. No Python headers here.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "lease.hpp"

namespace unirt {

struct CudaHostStatus {
  bool available = false;
  std::string library;  // the CUDA runtime library that was loaded
  std::string reason;   // why pinned memory is unavailable
  int devices = 0;
};

// Loads the CUDA runtime from the first of `candidates` (library names or paths) that opens, once; later calls
// return the loaded state, or retry with their candidates while nothing has loaded.
CudaHostStatus cuda_host_status(const std::vector<std::string>& candidates);

// An allocator of pinned memory (cudaHostAlloc, portable); throws std::runtime_error with the reason when the
// CUDA runtime or a device is missing.
std::shared_ptr<HostAllocator> pinned_host_allocator(const std::vector<std::string>& candidates);

}  // namespace unirt
