"""Vendor KServe's CRD schemas for the tests that validate `unirt deploy kserve`'s manifests.

    python scripts/vendor_kserve_schemas.py KSERVE_CHECKOUT [--ref REF]

Reads config/crd/full/serving.kserve.io_{servingruntimes,inferenceservices}.yaml from a KServe checkout (at git
`--ref`, default HEAD) and writes each CRD's served version's `openAPIV3Schema` to tests/data/kserve/ as JSON
Schema: the same schema with the `description` texts dropped and repeated subtrees (the pod and container specs
each component embeds) moved to `$defs` once and referenced, so the files stay small. Nothing else is changed.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import subprocess
from pathlib import Path

import yaml

CRDS = {"servingruntimes": "servingruntime", "inferenceservices": "inferenceservice"}
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "kserve"
SOURCE = "https://github.com/kserve/kserve/blob/{commit}/config/crd/full/serving.kserve.io_{crd}.yaml"


def _canon(value) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "description"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _subschemas(schema: dict):
    """The schemas directly inside `schema` (where a $ref may stand): properties' values, items, ..."""
    for key in ("properties", "patternProperties"):
        yield from schema.get(key, {}).values()
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            yield schema[key]
    for key in ("anyOf", "allOf", "oneOf"):
        yield from schema.get(key, [])


def _map_subschemas(schema: dict, fn) -> dict:
    out = dict(schema)
    for key in ("properties", "patternProperties"):
        if key in out:
            out[key] = {k: fn(v) for k, v in out[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = fn(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [fn(v) for v in out[key]]
    return out


def _share_repeats(root: dict, min_size: int = 300) -> tuple[dict, dict]:
    """Move the subschema that saves most (size x repeats) to $defs, until no subschema of min_size repeats."""
    defs: dict[str, dict] = {}
    while True:
        counts: collections.Counter[str] = collections.Counter()

        def walk(schema: dict, top: bool) -> None:
            if "$ref" in schema:
                return
            text = _canon(schema)
            if not top and len(text) >= min_size:
                counts[text] += 1
            for sub in _subschemas(schema):
                walk(sub, False)

        walk(root, True)
        for d in defs.values():
            walk(d, True)
        repeated = [(len(text) * (n - 1), text) for text, n in counts.items() if n > 1]
        if not repeated:
            return root, defs
        best = max(repeated)[1]
        key = hashlib.sha1(best.encode()).hexdigest()[:12]

        def replace(schema: dict) -> dict:
            if _canon(schema) == best:
                return {"$ref": f"#/$defs/{key}"}
            return _map_subschemas(schema, replace)

        root = _map_subschemas(root, replace)
        defs = {k: _map_subschemas(v, replace) for k, v in defs.items()}
        defs[key] = json.loads(best)


def vendor(checkout: Path, ref: str) -> None:
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", ref], check=True, capture_output=True, text=True
    ).stdout.strip()
    version = subprocess.run(
        ["git", "-C", str(checkout), "show", f"{commit}:python/VERSION"], capture_output=True, text=True
    ).stdout.strip()
    OUT.mkdir(parents=True, exist_ok=True)
    for crd, short in CRDS.items():
        crd_path = f"config/crd/full/serving.kserve.io_{crd}.yaml"
        text = subprocess.run(
            ["git", "-C", str(checkout), "show", f"{commit}:{crd_path}"], check=True, capture_output=True, text=True
        ).stdout
        doc = yaml.safe_load(text)
        served = [v for v in doc["spec"]["versions"] if v.get("served") and v.get("storage")]
        schema, defs = _share_repeats(_strip(served[0]["schema"]["openAPIV3Schema"]))
        schema = {
            "$comment": f"KServe {version} CRD {doc['metadata']['name']} {served[0]['name']}: openAPIV3Schema without "
            f"descriptions, repeated subtrees in $defs. Source: {SOURCE.format(commit=commit, crd=crd)}",
            "x-kserve": {
                "version": version,
                "commit": commit,
                "group": doc["spec"]["group"],
                "kind": doc["spec"]["names"]["kind"],
                "apiVersion": served[0]["name"],
            },
            **schema,
            "$defs": defs,
        }
        path = OUT / f"{short}.schema.json"
        path.write_text(json.dumps(schema, indent=1, sort_keys=False) + "\n")
        print(f"wrote {path} ({path.stat().st_size} bytes, {len(defs)} shared subtrees)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a KServe git checkout (or bare repository)")
    parser.add_argument("--ref", default="HEAD")
    args = parser.parse_args()
    vendor(args.checkout, args.ref)
