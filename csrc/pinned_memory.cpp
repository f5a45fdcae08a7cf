#include "pinned_memory.hpp"

#include <cstdint>
#include <mutex>
#include <new>
#include <stdexcept>

#if defined(_WIN32)
#include <windows.h>
#else
#include <dlfcn.h>
#endif

namespace unirt {
namespace {

// The slice of the CUDA runtime API unirt calls (cuda_runtime_api.h); cudaError_t is an int enum.
using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorMemoryAllocation = 2;
constexpr unsigned cudaHostAllocPortable = 1;

struct CudaRuntime {
  cudaError_t (*host_alloc)(void**, std::size_t, unsigned) = nullptr;
  cudaError_t (*free_host)(void*) = nullptr;
  cudaError_t (*get_device_count)(int*) = nullptr;
  const char* (*get_error_string)(cudaError_t) = nullptr;
  CudaHostStatus status;
  bool loaded = false;
};

std::mutex g_mu;
CudaRuntime g_cuda;

void* open_library(const std::string& name) {
#if defined(_WIN32)
  return reinterpret_cast<void*>(LoadLibraryA(name.c_str()));
#else
  return dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
#endif
}

void* symbol(void* lib, const char* name) {
#if defined(_WIN32)
  return reinterpret_cast<void*>(GetProcAddress(static_cast<HMODULE>(lib), name));
#else
  return dlsym(lib, name);
#endif
}

std::string last_open_error() {
#if defined(_WIN32)
  return "LoadLibrary error " + std::to_string(GetLastError());
#else
  const char* e = dlerror();
  return e ? e : "unknown error";
#endif
}

std::string error_text(const CudaRuntime& rt, cudaError_t code) {
  const char* s = rt.get_error_string ? rt.get_error_string(code) : nullptr;
  return (s ? std::string(s) : std::string("CUDA error")) + " (cudaError " + std::to_string(code) + ")";
}

template <typename F>
bool bind(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(symbol(lib, name));
  return fn != nullptr;
}

// Caller holds g_mu.
const CudaRuntime& load(const std::vector<std::string>& candidates) {
  if (g_cuda.loaded) return g_cuda;
  std::string tried;
  for (const auto& name : candidates) {
    void* lib = open_library(name);
    if (lib == nullptr) {
      tried += (tried.empty() ? "" : "; ") + name + ": " + last_open_error();
      continue;
    }
    CudaRuntime rt;
    if (!bind(lib, "cudaHostAlloc", rt.host_alloc) || !bind(lib, "cudaFreeHost", rt.free_host) ||
        !bind(lib, "cudaGetDeviceCount", rt.get_device_count) ||
        !bind(lib, "cudaGetErrorString", rt.get_error_string)) {
      tried += (tried.empty() ? "" : "; ") + name + ": not a CUDA runtime (cudaHostAlloc etc. missing)";
      continue;
    }
    rt.status.library = name;
    int count = 0;
    const cudaError_t err = rt.get_device_count(&count);
    if (err != cudaSuccess) {
      rt.status.reason = name + " loaded, but cudaGetDeviceCount failed: " + error_text(rt, err);
    } else if (count == 0) {
      rt.status.reason = name + " loaded, but it sees no CUDA device";
    } else {
      rt.status.available = true;
      rt.status.devices = count;
    }
    rt.loaded = true;  // the library stays loaded for the life of the process
    g_cuda = rt;
    return g_cuda;
  }
  g_cuda.status = CudaHostStatus{};
  g_cuda.status.reason = candidates.empty() ? "no CUDA runtime library to try"
                                            : "no CUDA runtime library could be loaded (" + tried + ")";
  return g_cuda;
}

const CudaRuntime& require(const std::vector<std::string>& candidates) {
  std::lock_guard<std::mutex> lock(g_mu);
  const CudaRuntime& rt = load(candidates);
  if (!rt.status.available) throw std::runtime_error("pinned host memory is unavailable: " + rt.status.reason);
  return rt;
}

class PinnedHostAllocator final : public HostAllocator {
 public:
  explicit PinnedHostAllocator(const CudaRuntime& rt) : rt_(rt) {}
  void* allocate(std::size_t nbytes, std::size_t alignment) override {
    void* p = nullptr;
    const cudaError_t err = rt_.host_alloc(&p, round_up(nbytes == 0 ? alignment : nbytes, alignment),
                                           cudaHostAllocPortable);
    if (err == cudaErrorMemoryAllocation) throw std::bad_alloc();
    if (err != cudaSuccess) throw std::runtime_error("cudaHostAlloc failed: " + error_text(rt_, err));
    if (reinterpret_cast<std::uintptr_t>(p) % alignment != 0) {  // CUDA returns page-aligned memory
      rt_.free_host(p);
      throw std::runtime_error("cudaHostAlloc returned memory not aligned to " + std::to_string(alignment));
    }
    return p;
  }
  void deallocate(void* p, std::size_t) noexcept override { rt_.free_host(p); }
  const char* kind() const noexcept override { return "pinned"; }

 private:
  const CudaRuntime& rt_;
};

}  // namespace

CudaHostStatus cuda_host_status(const std::vector<std::string>& candidates) {
  std::lock_guard<std::mutex> lock(g_mu);
  return load(candidates).status;
}

std::shared_ptr<HostAllocator> pinned_host_allocator(const std::vector<std::string>& candidates) {
  return std::make_shared<PinnedHostAllocator>(require(candidates));
}

}  // namespace unirt
