"""The child process that runs a converter (and the converted model, for verification).

Converters and freshly converted models can crash the process (pnnx has died with SIGSEGV, OpenVINO's converter on
a quantized model); run here, a crash is a ConversionError in the parent instead of a dead program.

    python -m unirt.conversion.child < spec.json     (spec: see `_main`; the last stdout line is the JSON result)
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path


def _main() -> int:
    spec = json.loads(sys.stdin.read())
    import numpy as np

    from .. import registry
    from ..backend import LoadOptions
    from ..devices import Device
    from ..errors import UnirtError
    from ..formats import open_model
    from ..loading import CheckedRunner
    from .signature import infos_from_json, plugin_notes, write_sidecar

    result: dict = {}
    try:
        plugin = registry.get_backend(spec["backend"])
        options = LoadOptions(
            device=Device.parse(spec["device"]), precision=spec["precision"], backend_options=spec["converter_options"]
        )
        out_dir = Path(spec["out_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        converted = plugin.convert(open_model(spec["model"]), out_dir, options)
        main = converted.path
        if main is None:
            raise TypeError(f"{spec['backend']}.convert() returned a model without a path")
        write_sidecar(
            main,
            infos_from_json(spec["inputs"]),
            infos_from_json(spec["outputs"]),
            **{**plugin_notes(main), **spec["sidecar"]},
        )
        files = [str(f) for f in (converted.files or (main,))]
        result.update(main=str(main), files=files)
        # The dims the converter kept dynamic (asked for with input_shapes2), per input: verified at both sizes.
        dynamic = plugin_notes(main).get("dynamic_axes") or {}
        result["dynamic_axes"] = dynamic
        print(json.dumps({"stage": "converted"}), flush=True)
        todo = list(zip(spec.get("verify_inputs", []), spec.get("verify_outputs", [])))
        if dynamic:
            todo += list(zip(spec.get("verify_inputs2", []), spec.get("verify_outputs2", [])))
        if todo:
            load = LoadOptions(
                device=Device.parse(spec["device"]), precision=spec["precision"], backend_options=spec["load_options"]
            )
            with CheckedRunner(plugin, open_model(main), load) as sess:
                for in_path, out_path in todo:
                    with np.load(in_path, allow_pickle=False) as feeds:
                        outputs = sess.run({k: feeds[k] for k in feeds.files})
                    np.savez(out_path, **{k: np.asarray(v) for k, v in outputs.items()})
    except UnirtError as exc:
        result = {"error": f"{type(exc).__name__}: {exc}", "type": type(exc).__name__, "message": str(exc)}
    except Exception as exc:  # a plugin bug: still report it as a failed conversion
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
