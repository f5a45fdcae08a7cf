// Python glue for host_memory: arrays whose memory is an AlignedBuffer owned by a capsule,
// so a numpy view can never outlive the memory it points at.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "bind_common.hpp"
#include "host_memory.hpp"

namespace py = pybind11;

namespace unirt {
namespace {

py::array wrap_buffer(std::unique_ptr<AlignedBuffer> buffer, const py::dtype& dtype,
                      const std::vector<py::ssize_t>& shape) {
  void* data = buffer->data();
  py::capsule owner(buffer.release(), "unirt.AlignedBuffer",
                    [](void* p) { delete static_cast<AlignedBuffer*>(p); });
  return py::array(dtype, shape, {}, data, owner);
}

py::array aligned_empty(const std::vector<py::ssize_t>& shape, const py::object& dtype_like, std::size_t alignment) {
  py::dtype dtype = py::dtype::from_args(dtype_like);
  if (dtype.attr("hasobject").cast<bool>()) throw py::type_error("aligned_empty cannot hold Python objects");
  const std::size_t nbytes = checked_nbytes(shape, static_cast<std::size_t>(dtype.itemsize()));
  return wrap_buffer(std::make_unique<AlignedBuffer>(nbytes, alignment), dtype, shape);
}

py::array contiguous_copy(const py::array& src, std::size_t alignment) {
  py::dtype dtype = src.dtype();
  if (dtype.attr("hasobject").cast<bool>()) throw py::type_error("contiguous_copy cannot copy Python objects");
  const int ndim = static_cast<int>(src.ndim());
  std::vector<py::ssize_t> shape(src.shape(), src.shape() + ndim);
  std::vector<std::int64_t> shape64(shape.begin(), shape.end());
  std::vector<std::int64_t> strides64(src.strides(), src.strides() + ndim);
  const std::size_t itemsize = static_cast<std::size_t>(src.itemsize());
  auto buffer = std::make_unique<AlignedBuffer>(checked_nbytes(shape, itemsize), alignment);
  const char* from = static_cast<const char*>(src.data());
  char* to = static_cast<char*>(buffer->data());
  {
    // `src` is held by the caller's frame for the whole call, so its memory stays valid without the GIL.
    py::gil_scoped_release release;
    strided_copy(from, to, shape64.data(), strides64.data(), ndim, itemsize);
  }
  return wrap_buffer(std::move(buffer), dtype, shape);
}

bool is_aligned(const py::array& a, std::size_t alignment) {
  return alignment != 0 && reinterpret_cast<std::uintptr_t>(a.data()) % alignment == 0;
}

}  // namespace

void register_host_memory(py::module_& m) {
  m.attr("DEFAULT_ALIGNMENT") = 64;
  m.def("aligned_empty", &aligned_empty, py::arg("shape"), py::arg("dtype"), py::arg("alignment") = 64,
        "A new uninitialised C-contiguous array whose memory is aligned to `alignment` bytes.");
  m.def("contiguous_copy", &contiguous_copy, py::arg("array"), py::arg("alignment") = 64,
        "Copy any strided array into new aligned C-contiguous memory, with the GIL released.");
  m.def("is_aligned", &is_aligned, py::arg("array"), py::arg("alignment") = 64,
        "Whether the array's first byte is aligned to `alignment` bytes.");
}

}  // namespace unirt
