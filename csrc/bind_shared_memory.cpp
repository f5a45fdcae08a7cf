// Python glue for shared_memory: a segment object exposing its bytes through the buffer protocol, so numpy
// views keep the mapping alive.
#include <pybind11/pybind11.h>

#include <memory>
#include <string>

#include "shared_memory.hpp"

namespace py = pybind11;

namespace unirt {

void register_shared_memory(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const SystemError& e) {
      // OSError(errno, text) picks the subclass: FileExistsError, FileNotFoundError, PermissionError...
      py::object error = py::reinterpret_borrow<py::object>(PyExc_OSError)(e.code(), e.what());
      PyErr_SetObject(PyExc_OSError, error.ptr());
    }
  });

  py::class_<SharedMemory>(m, "SharedMemory", py::buffer_protocol(),
                           "A named POSIX shared-memory segment, mapped whole. Views keep it mapped; the owner "
                           "unlinks the name when closed or destroyed.")
      .def_static("create", &SharedMemory::create, py::arg("name"), py::arg("size"),
                  "Create a new segment (fails if the name exists); the creator owns it.")
      .def_static("attach", &SharedMemory::attach, py::arg("name"), py::arg("writable") = true,
                  "Map an existing segment.")
      .def_static("unlink_name", &SharedMemory::unlink_name, py::arg("name"),
                  "Remove a segment's name; False if there was none.")
      .def("unlink", &SharedMemory::unlink, "Remove the name now (owner only); the mapping stays valid.")
      .def_property_readonly("name", &SharedMemory::name)
      .def_property_readonly("size", &SharedMemory::size)
      .def_property_readonly("owner", &SharedMemory::owner)
      .def_property_readonly("writable", &SharedMemory::writable)
      .def_property_readonly("unlinked", &SharedMemory::unlinked)
      .def_property_readonly("address", [](const SharedMemory& s) { return reinterpret_cast<std::uintptr_t>(s.data()); })
      .def_buffer([](SharedMemory& s) {
        return py::buffer_info(s.data(), 1, py::format_descriptor<unsigned char>::format(), 1,
                               {static_cast<py::ssize_t>(s.size())}, {1}, !s.writable());
      });
}

}  // namespace unirt
