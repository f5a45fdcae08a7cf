// Glue shared by the bind_*.cpp files: numpy arrays over leased memory, and shape checks.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "lease.hpp"

namespace unirt {

namespace py = pybind11;

inline std::size_t checked_nbytes(const std::vector<py::ssize_t>& shape, std::size_t itemsize) {
  std::size_t n = itemsize;
  for (py::ssize_t d : shape) {
    if (d < 0) throw py::value_error("shape dimensions must be >= 0");
    if (d != 0 && n > SIZE_MAX / static_cast<std::size_t>(d)) throw py::value_error("shape is too large");
    n *= static_cast<std::size_t>(d);
  }
  return n;
}

inline py::dtype plain_dtype(const py::object& dtype_like, const char* who) {
  py::dtype dtype = py::dtype::from_args(dtype_like);
  if (dtype.attr("hasobject").cast<bool>()) throw py::type_error(std::string(who) + " cannot hold Python objects");
  return dtype;
}

// A C-contiguous array over the lease's memory. The array owns the lease through a capsule: the memory goes
// back to its pool or arena only when the array and every view of it are gone.
inline py::array array_from_lease(std::unique_ptr<Lease> lease, const py::dtype& dtype,
                                  const std::vector<py::ssize_t>& shape) {
  void* data = lease->data();
  py::capsule owner(lease.release(), "unirt.Lease", [](void* p) { delete static_cast<Lease*>(p); });
  return py::array(dtype, shape, {}, data, owner);
}

}  // namespace unirt
