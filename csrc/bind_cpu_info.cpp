#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cpu_info.hpp"

namespace py = pybind11;

namespace unirt {

void register_cpu_info(py::module_& m) {
  m.def(
      "cpu_info",
      [] {
        const CpuInfo info = detect_cpu();
        py::dict d;
        d["arch"] = info.arch;
        d["vendor"] = info.vendor;
        d["brand"] = info.brand;
        d["features"] = info.features;
        return d;
      },
      "The CPU's architecture, vendor, brand string and instruction-set features, read from the hardware.");
}

}  // namespace unirt
