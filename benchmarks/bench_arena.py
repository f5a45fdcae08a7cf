"""(c) Four sessions in one unirt.Arena vs each with its own pool: peak reserved bytes and the process's peak RSS.

    python benchmarks/bench_arena.py [--batch 8] [--repeats 3] [--json out.json]

Four CNNs of different sizes (unirt.testing.batched_cnn: 16 channels, 64/96/128/160 px, batch `--batch`) run one
after another, each result consumed and dropped before the next session runs (a pipeline). Each configuration
runs in its own process, so ru_maxrss is that configuration's peak:
- separate: every session has its own BufferPool (pooled_outputs=True), as by default;
- arena: all four share one Arena;
- engine: pooled_outputs=False, ONNX Runtime allocates outputs (reference for RSS).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = (64, 96, 128, 160)


def child(mode: str, batch: int, repeats: int, directory: Path) -> dict:
    import numpy as np

    import unirt
    from unirt.testing import batched_cnn

    paths = [batched_cnn(directory / f"conv{s}.onnx", channels=16, size=s) for s in SIZES]
    arena = unirt.Arena() if mode == "arena" else None
    sessions = [
        unirt.Session(p, backend="onnxruntime", threads=1, arena=arena, pooled_outputs=mode != "engine") for p in paths
    ]
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((batch, 3, s, s)).astype(np.float32) for s in SIZES]
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    checksum = 0.0
    for _ in range(repeats):
        for sess, x in zip(sessions, inputs):
            out = sess.run(x)
            checksum += float(out["pooled"].sum())  # consume, then drop before the next stage
            del out
    result = {
        "mode": mode,
        "checksum": checksum,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "rss_after_load_kib": rss_loaded,
    }
    if mode == "arena":
        report = arena.report()
        result.update(
            reserved_peak=report.shared_peak_bytes,
            without_sharing=report.separate_bytes,
            per_session=report.per_session,
        )
    elif mode == "separate":
        result.update(
            reserved_peak=sum(s.pool.stats().peak_bytes_reserved for s in sessions),
            per_session={str(p.name): s.pool.stats().peak_bytes_reserved for p, s in zip(paths, sessions)},
        )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.repeats, args.dir)))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("engine", "separate", "arena"):
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    mode,
                    "--batch",
                    str(args.batch),
                    "--repeats",
                    str(args.repeats),
                    "--dir",
                    tmp,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len({round(r["checksum"], 2) for r in results.values()}) == 1, "configurations disagree"
    mib = 2**20
    print(
        f"4 sessions (batched_cnn 16ch, {', '.join(map(str, SIZES))} px, batch {args.batch}), run in sequence "
        f"x{args.repeats}, outputs dropped between stages"
    )
    sep, arena = results["separate"], results["arena"]
    print(f"  reserved peak, separate pools : {sep['reserved_peak'] / mib:8.2f} MiB")
    print(
        f"  reserved peak, one arena      : {arena['reserved_peak'] / mib:8.2f} MiB "
        f"(the arena's own estimate without sharing: {arena['without_sharing'] / mib:.2f} MiB)"
    )
    for mode in ("engine", "separate", "arena"):
        r = results[mode]
        print(
            f"  peak RSS {mode:<9}: {r['peak_rss_kib'] / 1024:8.1f} MiB   (after loading: "
            f"{r['rss_after_load_kib'] / 1024:.1f} MiB)"
        )
    print(
        f"arena / separate: reserved {arena['reserved_peak'] / sep['reserved_peak']:.3f}, "
        f"peak RSS {arena['peak_rss_kib'] / sep['peak_rss_kib']:.3f}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
