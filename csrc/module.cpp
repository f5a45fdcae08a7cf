// unirt._core: registers each area; the logic lives in the plain C++ files beside this one.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace unirt {
void register_cpu_info(py::module_& m);
void register_host_memory(py::module_& m);
void register_memory_pool(py::module_& m);
void register_batch_copy(py::module_& m);
void register_shared_memory(py::module_& m);
void register_json_numbers(py::module_& m);
}  // namespace unirt

#ifndef UNIRT_VERSION
#define UNIRT_VERSION "0.0.0"
#endif

PYBIND11_MODULE(_core, m) {
  m.doc() = "unirt's native core: host memory, buffer pools, arenas, batch copies, shared memory, JSON number arrays, hardware facts.";
  m.attr("__version__") = UNIRT_VERSION;
  unirt::register_cpu_info(m);
  unirt::register_host_memory(m);
  unirt::register_memory_pool(m);
  unirt::register_batch_copy(m);
  unirt::register_shared_memory(m);
  unirt::register_json_numbers(m);
}
