"""Model configuration: config.pbtxt parsed with protobuf's text format into Triton's `ModelConfig`, checked
against the loaded model, and completed from it where fields are missing (Triton's auto-complete).

Every check names the config field that is wrong, e.g. `input[1].dims`, so a bad config fails that model's load
with a message its author can act on while the server goes on serving the other models.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor
from tritonclient.grpc import model_config_pb2 as mc

from ..backend import PRECISIONS
from ..errors import ModelLoadError
from ..tensor import TensorInfo
from .datatypes import config_type_to_datatype, datatype_to_config_type, from_numpy_dtype, to_numpy_dtype

__all__ = [
    "ModelConfig",
    "TensorSpec",
    "BatchingPolicy",
    "QueuePolicy",
    "ModelSpec",
    "ConfigError",
    "parse_config_text",
    "parse_config_json",
    "backend_for",
    "select_versions",
    "instance_devices",
    "build_spec",
    "config_to_dict",
    "platforms",
    "backend_names",
    "isolate_setting",
    "queue_policy",
    "ISOLATE_VALUES",
]

log = logging.getLogger(__name__)
ModelConfig = mc.ModelConfig


def platforms() -> dict[str, str]:
    """Triton platform names -> unirt backend, as the installed plugins declare them (`Backend.serve_platform`)."""
    from .. import registry

    return {_platform_of(n): n for n in registry.installed_names()}


def backend_names() -> dict[str, str]:
    """config.pbtxt `backend:` names -> unirt backend ("unirt": unirt picks from the model file and the machine):
    each installed plugin's name and the aliases it declares (`Backend.serve_aliases`), and this project's
    backends by name."""
    from .. import registry

    names = {"unirt": "auto"}
    for name in (*registry.known_names(), *registry.installed_names()):  # a missing one's load says what to install
        plugin = registry.find_backend(name)
        for alias in (name, *(plugin.serve_aliases if plugin is not None else ())):
            names.setdefault(alias, name)
    return names


def _platform_of(backend: str) -> str:
    """The platform name Triton clients know `backend` by (auto-complete and model metadata)."""
    from .. import registry

    plugin = registry.find_backend(backend)
    return (plugin.serve_platform if plugin is not None else None) or backend


_PARAMETERS = {"threads", "precision", "isolate"}
ISOLATE_VALUES = ("true", "false", "auto")
_GIVEN_MBS = "_unirt_max_batch_size_given"  # set by the parsers; removed from the completed config


class ConfigError(ModelLoadError):
    """config.pbtxt is malformed or disagrees with the model; the message names the field."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as clients see it (`dims`, without the batch dim) and as the model sees it."""

    name: str
    datatype: str
    dims: tuple[int, ...]  # -1 = any size
    model_dims: tuple[int, ...]  # `reshape.shape` when the config reshapes, else `dims`
    dtype: np.dtype
    optional: bool = False
    labels: tuple[str, ...] = ()

    @property
    def reshaped(self) -> bool:
        return self.model_dims != self.dims

    @cached_property
    def model_fixed_count(self) -> int:
        """Product of the fixed sizes in `model_dims`: a reshaped input's element count must be a multiple of it
        (equal to it when `model_dims` has no -1)."""
        return int(np.prod([d for d in self.model_dims if d != -1], dtype=np.int64))


@dataclass(frozen=True)
class BatchingPolicy:
    """The dynamic batcher's settings (config `dynamic_batching`)."""

    preferred_sizes: tuple[int, ...] = ()
    max_queue_delay_s: float = 0.0
    max_queue_size: int = 0  # 0 = unbounded


@dataclass(frozen=True)
class QueuePolicy:
    """A model's queue policy (config `dynamic_batching.default_queue_policy`, Triton's `ModelQueuePolicy`).

    `max_queue_size` 0 means "not set": the server's default bound applies (see `ModelManager`).
    `default_timeout_us` (0: none) drops a request still queued after that long; a request's own `timeout`
    parameter applies where the config sets no default, and may shorten (never lengthen) the default where
    `allow_timeout_override` is set."""

    max_queue_size: int = 0
    default_timeout_us: int = 0
    allow_timeout_override: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """A checked, completed model configuration: everything the server needs, precomputed once at load."""

    name: str
    config: Any  # the completed ModelConfig message
    backend: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    static_batch: int | None = None  # the model's batch dim when it is fixed: batches are padded to it
    batching: BatchingPolicy | None = None
    options: dict = field(default_factory=dict)
    queue: QueuePolicy = QueuePolicy()

    @cached_property
    def input_map(self) -> dict[str, TensorSpec]:
        """Inputs by name, built once (read-only: shared by every request)."""
        return {t.name: t for t in self.inputs}

    @cached_property
    def output_map(self) -> dict[str, TensorSpec]:
        """Outputs by name, built once (read-only: shared by every request)."""
        return {t.name: t for t in self.outputs}


def _mark_max_batch_size(config: Any, given: bool) -> Any:
    # proto3 cannot tell "max_batch_size: 0" from no max_batch_size; auto-complete must (0 = "don't batch").
    config.parameters[_GIVEN_MBS].string_value = "1" if given else ""
    if not given:
        del config.parameters[_GIVEN_MBS]
    return config


def parse_config_text(text: str, where: str = "config.pbtxt") -> Any:
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
        tokens = text_format.Tokenizer(text.splitlines())
        given = False
        while not tokens.AtEnd():
            given = given or tokens.token == "max_batch_size"
            tokens.NextToken()
    except text_format.ParseError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return _mark_max_batch_size(config, given)


def parse_config_json(text: str | bytes, where: str = "config override") -> Any:
    config = mc.ModelConfig()
    try:
        json_format.Parse(text, config)
        doc = json.loads(text)
    except (json_format.ParseError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return _mark_max_batch_size(config, "max_batch_size" in doc or "maxBatchSize" in doc)


def read_config(path: Path | None) -> Any:
    if path is None:
        return mc.ModelConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_config_text(text, str(path))


def backend_for(config: Any) -> str:
    """The unirt backend a config asks for, from `backend` or `platform` ("auto" when it names neither)."""
    if config.backend:
        names = backend_names()
        chosen = names.get(config.backend)
        if chosen is None:
            raise ConfigError(
                f"backend: {config.backend!r} is not served by unirt; expected one of "
                f"{', '.join(sorted(names))} (unirt, or an installed unirt plugin's name)"
            )
        if config.platform and platforms().get(config.platform, chosen) != chosen:
            raise ConfigError(f"platform: {config.platform!r} disagrees with backend {config.backend!r}")
        return chosen
    if config.platform:
        known = platforms()
        if config.platform not in known:
            raise ConfigError(
                f"platform: {config.platform!r} is not served by unirt; expected one of "
                f"{', '.join(sorted(known))} (an installed unirt plugin's platform)"
            )
        return known[config.platform]
    return "auto"


def select_versions(config: Any, available: Sequence[int]) -> list[int]:
    """The versions `version_policy` selects among those on disk (default: the latest one)."""
    have = sorted(available)
    policy = config.version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return have
    if kind == "specific":
        wanted = sorted(set(policy.specific.versions))
        missing = [v for v in wanted if v not in have]
        if missing:
            raise ConfigError(
                f"version_policy.specific.versions: version(s) {missing} not found (on disk: {have or 'none'})"
            )
        return wanted
    count = policy.latest.num_versions if kind == "latest" else 1
    if count < 1:
        raise ConfigError(f"version_policy.latest.num_versions must be >= 1, got {count}")
    return have[-count:]


def instance_devices(config: Any) -> list[str]:
    """One unirt device string per execution instance, from `instance_group` (default: one instance, auto)."""
    devices: list[str] = []
    for i, group in enumerate(config.instance_group):
        count = group.count or 1
        if count < 0:
            raise ConfigError(f"instance_group[{i}].count must be >= 1, got {group.count}")
        kind = mc.ModelInstanceGroup.Kind.Name(group.kind)
        if kind == "KIND_CPU":
            devices += ["cpu"] * count
        elif kind == "KIND_GPU":
            for gpu in group.gpus or [0]:
                devices += [f"cuda:{gpu}"] * count
        else:  # KIND_AUTO, KIND_MODEL: the model's own choice, i.e. unirt's selection
            devices += ["auto"] * count
    return devices or ["auto"]


def _dims(values: Sequence[int], where: str) -> tuple[int, ...]:
    dims = tuple(int(d) for d in values)
    bad = [d for d in dims if d == 0 or d < -1]
    if bad:
        raise ConfigError(f"{where}: dims must be -1 (any size) or positive, got {list(dims)}")
    return dims


def _model_dim(d: Any) -> int:
    return d if isinstance(d, int) else -1


def _check_io(
    kind: str, entries: Sequence[Any], infos: Sequence[TensorInfo], batched: bool, labels_dir: Path | None
) -> tuple[list[TensorSpec], set[int]]:
    """TensorSpecs for the config's inputs or outputs, checked against the model; also the model's batch dims."""
    by_name = {t.name: t for t in infos}
    specs, batch_dims = [], set()
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"{kind}[{i}]"
        if not entry.name:
            raise ConfigError(f"{where}.name is missing")
        if entry.name in seen:
            raise ConfigError(f"{where}.name: {entry.name!r} appears twice")
        seen.add(entry.name)
        info = by_name.get(entry.name)
        if info is None:
            raise ConfigError(
                f"{where}.name: the model has no {kind} {entry.name!r}; its {kind}s are: {', '.join(by_name) or 'none'}"
            )
        if entry.is_shape_tensor:
            raise ConfigError(f"{where}.is_shape_tensor: shape tensors are not supported by unirt serve")
        if kind == "input" and entry.allow_ragged_batch:
            raise ConfigError(f"{where}.allow_ragged_batch: ragged batching is not supported by unirt serve")
        type_name = mc.DataType.Name(entry.data_type)
        if type_name == "TYPE_INVALID":
            raise ConfigError(f"{where}.data_type is missing")
        datatype = config_type_to_datatype(type_name)
        dtype = to_numpy_dtype(datatype)
        model_type = from_numpy_dtype(info.dtype)
        if model_type != datatype:
            raise ConfigError(
                f"{where}.data_type: {type_name} but the model's {kind} {entry.name!r} is "
                f"{datatype_to_config_type(model_type) if model_type else info.dtype}"
            )
        dims = _dims(entry.dims, f"{where}.dims")
        model_dims = _dims(entry.reshape.shape, f"{where}.reshape.shape") if entry.HasField("reshape") else dims
        if kind == "input" and entry.HasField("reshape") and model_dims.count(-1) > 1:
            raise ConfigError(
                f"{where}.reshape.shape {list(model_dims)}: at most one -1, as the size it stands for "
                "is worked out from the request's element count"
            )
        if (
            entry.HasField("reshape")
            and -1 not in dims + model_dims
            and int(np.prod(dims, dtype=np.int64)) != int(np.prod(model_dims, dtype=np.int64))
        ):
            raise ConfigError(
                f"{where}.reshape.shape {list(model_dims)} has a different element count than dims {list(dims)}"
            )
        if info.shape is None:  # the model file gives no shape (a native ncnn/MNN output): the config's dims stand
            labels_only: tuple[str, ...] = ()
            if kind == "output" and entry.label_filename:
                labels_only = _read_labels(entry.label_filename, labels_dir, f"{where}.label_filename")
            specs.append(
                TensorSpec(
                    entry.name,
                    datatype,
                    dims,
                    model_dims,
                    dtype,
                    optional=bool(getattr(entry, "optional", False)),
                    labels=labels_only,
                )
            )
            continue
        shape = tuple(_model_dim(d) for d in info.shape)
        expected_rank = len(model_dims) + (1 if batched else 0)
        if len(shape) != expected_rank:
            field_name = f"{where}.reshape.shape" if entry.HasField("reshape") else f"{where}.dims"
            hint = " (plus the batch dim, as max_batch_size > 0)" if batched else ""
            raise ConfigError(
                f"{field_name}: {list(model_dims)}{hint} has rank {expected_rank}, the model's "
                f"{kind} {entry.name!r} has shape {list(shape)} (rank {len(shape)})"
            )
        if batched:
            batch_dims.add(shape[0])
            shape = shape[1:]
        for axis, (want, have) in enumerate(zip(model_dims, shape)):
            if want != -1 and have != -1 and want != have:
                field_name = f"{where}.reshape.shape" if entry.HasField("reshape") else f"{where}.dims"
                raise ConfigError(
                    f"{field_name}[{axis}] is {want} but the model's {kind} {entry.name!r} has "
                    f"{have} there (model shape {list(info.shape)})"
                )
        labels: tuple[str, ...] = ()
        if kind == "output" and entry.label_filename:
            labels = _read_labels(entry.label_filename, labels_dir, f"{where}.label_filename")
        specs.append(
            TensorSpec(
                entry.name,
                datatype,
                dims,
                model_dims,
                dtype,
                optional=bool(getattr(entry, "optional", False)),
                labels=labels,
            )
        )
    return specs, batch_dims


def _read_labels(file_name: str, directory: Path | None, where: str) -> tuple[str, ...]:
    if directory is None or os.sep in file_name or "/" in file_name or file_name in (".", ".."):
        raise ConfigError(f"{where}: {file_name!r} must be a file name in the model directory")
    try:
        return tuple(line.rstrip("\r\n") for line in (directory / file_name).read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {file_name!r}: {exc}") from None


def _complete_io(entries: Any, infos: Sequence[TensorInfo], batched: bool) -> None:
    for info in infos:
        datatype = from_numpy_dtype(info.dtype)
        if datatype is None:
            raise ConfigError(
                f"the model's tensor {info.name!r} has dtype {info.dtype}, which the v2 protocol cannot carry"
            )
        if info.shape is None:
            raise ConfigError(
                f"the model's tensor {info.name!r} has no shape in the model file (its rank is known "
                "only once the model runs): write the model's inputs and outputs, with their dims, "
                "in its config.pbtxt"
            )
        entry = entries.add()
        entry.name = info.name
        entry.data_type = mc.DataType.Value(datatype_to_config_type(datatype))
        shape = [_model_dim(d) for d in info.shape]
        entry.dims.extend(shape[1:] if batched else shape)


def _batchable(infos: Sequence[TensorInfo]) -> bool:
    """Whether dim 0 of every input and output is the same named dim ('N', 'batch'): the model then says its
    rows are independent. A merely dynamic dim 0 does not (Concat gives [N + M, ...]; an unnamed dim says
    nothing), so such models are not batched unless their config asks."""
    first = {t.shape[0] if t.shape else None for t in infos}  # shape None: a rank unknown until the model runs
    name = first.pop() if len(first) == 1 else None
    return isinstance(name, str) and bool(name)


def build_spec(
    config: Any,
    name: str,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    backend: str,
    *,
    default_max_batch_size: int = 4,
    model_dir: Path | None = None,
) -> ModelSpec:
    """Complete `config` (a copy) from the model's inputs/outputs and check the two agree."""
    cfg = mc.ModelConfig()
    cfg.CopyFrom(config)
    if cfg.name and cfg.name != name:
        raise ConfigError(f"name: {cfg.name!r} does not match the model's directory name {name!r}")
    cfg.name = name
    mbs_given = _GIVEN_MBS in cfg.parameters
    if mbs_given:
        del cfg.parameters[_GIVEN_MBS]
    for unsupported in ("sequence_batching", "ensemble_scheduling"):
        if cfg.HasField(unsupported):
            raise ConfigError(f"{unsupported}: not supported by unirt serve")
    if len(cfg.batch_input) or len(cfg.batch_output):
        raise ConfigError("batch_input/batch_output: not supported by unirt serve")
    if cfg.max_batch_size < 0:
        raise ConfigError(f"max_batch_size must be >= 0, got {cfg.max_batch_size}")
    # Auto-complete batching only where the config says nothing about it: no inputs, outputs or max_batch_size.
    if not len(cfg.input) and not len(cfg.output) and not mbs_given:
        if cfg.max_batch_size == 0 and default_max_batch_size > 0 and _batchable([*inputs, *outputs]):
            cfg.max_batch_size = default_max_batch_size
            if not cfg.HasField("dynamic_batching") and cfg.max_batch_size > 1:
                cfg.dynamic_batching.SetInParent()
    batched = cfg.max_batch_size > 0
    if not len(cfg.input):
        _complete_io(cfg.input, inputs, batched)
    if not len(cfg.output):
        _complete_io(cfg.output, outputs, batched)
    if not cfg.backend and not cfg.platform:
        cfg.backend = backend
        cfg.platform = _platform_of(backend)
    elif not cfg.platform:
        cfg.platform = _platform_of(backend)
    in_specs, in_batch = _check_io("input", cfg.input, inputs, batched, model_dir)
    out_specs, out_batch = _check_io("output", cfg.output, outputs, batched, model_dir)
    given = {t.name for t in in_specs}
    missing = [t.name for t in inputs if t.name not in given]
    if missing:
        raise ConfigError(f"input: the model's input(s) {', '.join(map(repr, missing))} are not in the config")
    static_batch = None
    if batched:
        fixed = {d for d in in_batch | out_batch if d != -1}
        if len(fixed) > 1 or (fixed and -1 in in_batch | out_batch):
            raise ConfigError(
                f"max_batch_size: {cfg.max_batch_size} needs a batch dim on every input and output, but "
                f"the model's first dims disagree ({sorted(in_batch | out_batch)})"
            )
        if fixed:
            static_batch = fixed.pop()
            if cfg.max_batch_size > static_batch:
                raise ConfigError(
                    f"max_batch_size: {cfg.max_batch_size} is larger than the model's fixed batch dim {static_batch}"
                )
    batching = None
    if cfg.HasField("dynamic_batching"):
        db = cfg.dynamic_batching
        if not batched:
            if len(db.preferred_batch_size) or db.max_queue_delay_microseconds:  # a queue policy alone is fine
                log.warning("model %r: dynamic_batching needs max_batch_size > 0; requests run one at a time", name)
        else:
            bad = [s for s in db.preferred_batch_size if s < 1 or s > cfg.max_batch_size]
            if bad:
                raise ConfigError(
                    f"dynamic_batching.preferred_batch_size: {bad} outside 1..max_batch_size ({cfg.max_batch_size})"
                )
            if db.priority_levels or len(db.priority_queue_policy):
                raise ConfigError("dynamic_batching.priority_levels: priority queues are not supported by unirt serve")
            batching = BatchingPolicy(
                tuple(sorted(set(db.preferred_batch_size))),
                db.max_queue_delay_microseconds / 1e6,
                max(0, db.default_queue_policy.max_queue_size),
            )
    options = _options(cfg)
    return ModelSpec(
        name,
        cfg,
        backend,
        cfg.max_batch_size,
        tuple(in_specs),
        tuple(out_specs),
        static_batch,
        batching,
        options,
        queue_policy(cfg),
    )


def queue_policy(cfg: Any) -> QueuePolicy:
    """The config's queue policy (checked). Read whether or not the model batches: a model with
    `max_batch_size: 0` may still give `dynamic_batching { default_queue_policy { ... } }` for its queue."""
    if not cfg.HasField("dynamic_batching"):
        return QueuePolicy()
    qp = cfg.dynamic_batching.default_queue_policy
    where = "dynamic_batching.default_queue_policy"
    if qp.timeout_action != mc.ModelQueuePolicy.REJECT:
        raise ConfigError(
            f"{where}.timeout_action: only REJECT is supported by unirt serve (a request that waited "
            "past its timeout is dropped and answered UNAVAILABLE)"
        )
    return QueuePolicy(qp.max_queue_size, qp.default_timeout_microseconds, qp.allow_timeout_override)


def _options(cfg: Any) -> dict:
    """Session options from config `parameters` (threads, precision); other keys are logged and ignored."""
    options: dict[str, Any] = {}
    for key, value in cfg.parameters.items():
        text = value.string_value
        if key == _GIVEN_MBS:
            continue
        if key == "threads":
            if not text.isdigit() or int(text) < 1:
                raise ConfigError(f"parameters[threads]: expected a positive integer, got {text!r}")
            options["threads"] = int(text)
        elif key == "precision":
            if text not in PRECISIONS:
                raise ConfigError(f"parameters[precision]: expected one of {', '.join(PRECISIONS)}, got {text!r}")
            options["precision"] = text
        elif key == "isolate":
            isolate_setting(cfg)  # checked here, applied by the model loader (not a Session option as such)
        else:
            log.warning(
                "model %r: config parameter %r is not used by unirt serve (known: %s)",
                cfg.name,
                key,
                ", ".join(sorted(_PARAMETERS)),
            )
    return options


def isolate_setting(config: Any) -> str:
    """The config's `parameters { key: "isolate" }`: "true", "false" or "auto" (the default)."""
    if "isolate" not in config.parameters:
        return "auto"
    text = config.parameters["isolate"].string_value.strip().lower()
    if text not in ISOLATE_VALUES:
        raise ConfigError(
            f"parameters[isolate]: expected one of {', '.join(ISOLATE_VALUES)}, got "
            f"{config.parameters['isolate'].string_value!r}"
        )
    return text


def session_options(config: Any) -> dict:
    """The Session keyword arguments a config's `parameters` ask for (checked; used before the spec exists)."""
    return _options(config)


def config_to_dict(config: Any) -> dict:
    """The config as Triton's HTTP API returns it: snake_case names, every field, 64-bit ints as numbers."""
    data = json_format.MessageToDict(
        config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _fix_int64(config.DESCRIPTOR, data)


_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def _fix_int64(descriptor: Any, data: dict) -> dict:
    for fd in descriptor.fields:
        if fd.name not in data:
            continue
        value = data[fd.name]
        if fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                vfd = fd.message_type.fields_by_name["value"]
                if vfd.message_type is not None:
                    data[fd.name] = {k: _fix_int64(vfd.message_type, v) for k, v in value.items()}
                elif vfd.type in _INT64:
                    data[fd.name] = {k: int(v) for k, v in value.items()}
            elif isinstance(value, list):
                data[fd.name] = [_fix_int64(fd.message_type, v) for v in value]
            else:
                data[fd.name] = _fix_int64(fd.message_type, value)
        elif fd.type in _INT64:
            data[fd.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
    return data
