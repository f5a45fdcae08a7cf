// Python glue for buffer_pool, arena and pinned_memory: pools and arenas whose arrays own their lease.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "arena.hpp"
#include "bind_common.hpp"
#include "buffer_pool.hpp"
#include "pinned_memory.hpp"

namespace unirt {
namespace {

std::shared_ptr<HostAllocator> allocator_for(bool pinned, const std::vector<std::string>& cuda_libraries) {
  return pinned ? pinned_host_allocator(cuda_libraries) : aligned_host_allocator();
}

// The Python object: closing it (or its last reference going away) frees the cache. Arrays still out keep the
// pool's bookkeeping alive and free their block when they go.
struct PoolHandle {
  explicit PoolHandle(std::shared_ptr<BufferPool> p) : pool(std::move(p)) {}
  PoolHandle(const PoolHandle&) = delete;
  PoolHandle& operator=(const PoolHandle&) = delete;
  std::shared_ptr<BufferPool> pool;
  ~PoolHandle() {
    if (pool) pool->close();
  }
};

py::dict pool_stats(const BufferPool& pool) {
  const PoolStats s = pool.stats();
  py::dict d;
  d["allocations"] = s.allocations;
  d["reuses"] = s.reuses;
  d["releases"] = s.releases;
  d["frees"] = s.frees;
  d["blocks_live"] = s.blocks_live;
  d["blocks_cached"] = s.blocks_cached;
  d["bytes_live"] = s.bytes_live;
  d["peak_bytes_live"] = s.peak_bytes_live;
  d["bytes_cached"] = s.bytes_cached;
  d["bytes_reserved"] = s.bytes_reserved;
  d["peak_bytes_reserved"] = s.peak_bytes_reserved;
  return d;
}

py::dict arena_stats(const Arena& arena) {
  const ArenaStats s = arena.stats();
  py::dict d;
  d["bytes_reserved"] = s.bytes_reserved;
  d["peak_bytes_reserved"] = s.peak_bytes_reserved;
  d["bytes_live"] = s.bytes_live;
  d["peak_bytes_live"] = s.peak_bytes_live;
  d["chunks"] = s.chunks;
  d["leases"] = s.leases;
  d["chunk_allocations"] = s.chunk_allocations;
  d["chunk_frees"] = s.chunk_frees;
  return d;
}

template <typename Source>
py::array empty_from(Source&& source, const std::vector<py::ssize_t>& shape, const py::object& dtype_like,
                     const char* who) {
  py::dtype dtype = plain_dtype(dtype_like, who);
  const std::size_t nbytes = checked_nbytes(shape, static_cast<std::size_t>(dtype.itemsize()));
  return array_from_lease(source(nbytes), dtype, shape);
}

}  // namespace

void register_memory_pool(py::module_& m) {
  py::class_<PoolHandle>(m, "BufferPool",
                         "Aligned host buffers in size classes, reused across runs. Thread-safe. An array from "
                         "`empty` owns its block: the block returns to the pool when no array views it.")
      .def(py::init([](std::size_t alignment, std::size_t max_cached_bytes, bool pinned,
                       const std::vector<std::string>& cuda_libraries) {
             return std::make_unique<PoolHandle>(
                 BufferPool::create(allocator_for(pinned, cuda_libraries), alignment, max_cached_bytes));
           }),
           py::arg("alignment") = 64, py::arg("max_cached_bytes") = SIZE_MAX, py::arg("pinned") = false,
           py::arg("cuda_libraries") = std::vector<std::string>{})
      .def(
          "empty",
          [](PoolHandle& h, const std::vector<py::ssize_t>& shape, const py::object& dtype) {
            return empty_from([&](std::size_t n) { return h.pool->acquire(n); }, shape, dtype, "BufferPool");
          },
          py::arg("shape"), py::arg("dtype"), "An uninitialised C-contiguous array whose memory is a pool block.")
      .def("stats", [](const PoolHandle& h) { return pool_stats(*h.pool); })
      .def("trim", [](PoolHandle& h) { return h.pool->trim(); }, "Free every cached block; returns the bytes freed.")
      .def("close", [](PoolHandle& h) { h.pool->close(); },
           "Free the cache and stop caching; arrays still out free their block when they go.")
      .def_property_readonly("closed", [](const PoolHandle& h) { return h.pool->closed(); })
      .def_property_readonly("alignment", [](const PoolHandle& h) { return h.pool->alignment(); })
      .def_property_readonly("max_cached_bytes", [](const PoolHandle& h) { return h.pool->max_cached_bytes(); })
      .def_property_readonly("kind", [](const PoolHandle& h) { return std::string(h.pool->kind()); })
      .def_static("size_class", &BufferPool::size_class, py::arg("nbytes"), py::arg("alignment") = 64);

  py::class_<Arena, std::shared_ptr<Arena>>(m, "Arena",
                                            "One region carved by offset among the sessions that share it.")
      .def(py::init([](std::size_t initial_bytes, std::size_t alignment, bool pinned,
                       const std::vector<std::string>& cuda_libraries) {
             return Arena::create(allocator_for(pinned, cuda_libraries), alignment, initial_bytes);
           }),
           py::arg("initial_bytes") = 0, py::arg("alignment") = 64, py::arg("pinned") = false,
           py::arg("cuda_libraries") = std::vector<std::string>{})
      .def(
          "empty",
          [](std::shared_ptr<Arena>& a, const std::vector<py::ssize_t>& shape, const py::object& dtype) {
            return empty_from([&](std::size_t n) { return a->allocate(n); }, shape, dtype, "Arena");
          },
          py::arg("shape"), py::arg("dtype"), "An uninitialised C-contiguous array carved out of the arena.")
      .def("reserve", &Arena::reserve, py::arg("nbytes"),
           "Make sure `nbytes` can be carved in one piece, growing the arena if not.")
      .def("stats", [](const Arena& a) { return arena_stats(a); })
      .def_property_readonly("alignment", &Arena::alignment)
      .def_property_readonly("kind", [](const Arena& a) { return std::string(a.kind()); })
      .def_readonly_static("granularity", &Arena::kGranularity);

  m.def(
      "cuda_host_status",
      [](const std::vector<std::string>& candidates) {
        const CudaHostStatus s = cuda_host_status(candidates);
        py::dict d;
        d["available"] = s.available;
        d["library"] = s.library;
        d["reason"] = s.reason;
        d["devices"] = s.devices;
        return d;
      },
      py::arg("candidates"),
      "Load the CUDA runtime from the first candidate that opens (once) and say whether pinned memory works.");
}

}  // namespace unirt
