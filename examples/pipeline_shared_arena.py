"""A detector-then-recognizer pipeline whose two sessions share one memory arena.

    python examples/pipeline_shared_arena.py

The detector scores every 2x2 patch of an image (a heatmap); the best peaks are cropped and the recognizer
classifies and masks all crops in one batch. The two models never run at the same time, so their output buffers
can come from one `unirt.Arena`: it settles on the largest set of buffers alive at once instead of the sum of both
sessions' needs (`arena.report()` shows both figures).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import unirt

MODELS = Path(__file__).resolve().parent / "models"
CROP = 64
STRIDE = 2  # heatmap cells per image pixel


def synthetic_image(size: int = 256, objects: int = 3, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A dark, noisy RGB image with a few bright squares; returns it as float32[1, 3, size, size] and the
    squares' centres."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.0, 0.2, (1, 3, size, size)).astype(np.float32)
    centres = []
    for _ in range(objects):
        y, x = (int(v) for v in rng.integers(CROP, size - CROP, 2))
        image[0, :, y - 10 : y + 10, x - 10 : x + 10] = rng.uniform(0.8, 1.0, (3, 1, 1))
        centres.append((y, x))
    return image, centres


def top_cells(heatmap: np.ndarray, k: int, threshold: float = 0.5, spacing: int = 12) -> list[tuple[int, int]]:
    """The k best cells above `threshold`, at least `spacing` cells apart (a minimal non-maximum suppression)."""
    grid = heatmap[0, 0]
    picked: list[tuple[int, int]] = []
    for flat in np.argsort(-grid, axis=None):
        cy, cx = divmod(int(flat), grid.shape[1])
        if grid[cy, cx] < threshold or len(picked) == k:
            break
        if all(abs(cy - py) >= spacing or abs(cx - px) >= spacing for py, px in picked):
            picked.append((cy, cx))
    return picked


def crops_at(image: np.ndarray, cells: list[tuple[int, int]]) -> np.ndarray:
    """CROP x CROP patches centred on each cell, one batch float32[M, 3, CROP, CROP] (zero-padded at the edges)."""
    half = CROP // 2
    padded = np.pad(image[0], ((0, 0), (half, half), (half, half)))
    out = np.empty((len(cells), 3, CROP, CROP), np.float32)
    for i, (cy, cx) in enumerate(cells):
        y, x = cy * STRIDE, cx * STRIDE  # the cell in image pixels (+half for the padding, -half for the crop)
        out[i] = padded[:, y : y + CROP, x : x + CROP]
    return out


def main() -> None:
    arena = unirt.Arena()
    # pooled_outputs=True: every output is carved from the arena (by default only outputs of 64 KiB or more are).
    with (
        unirt.Session(MODELS / "detector.onnx", arena=arena, pooled_outputs=True) as detector,
        unirt.Session(MODELS / "recognizer.onnx", arena=arena, pooled_outputs=True) as recognizer,
    ):
        print(f"detector:   {detector}\nrecognizer: {recognizer}\n")
        for seed in range(3):  # a few frames; each frame's buffers go back to the arena before the next
            image, truth = synthetic_image(seed=seed)
            heatmap = detector.run(image)["heatmap"]
            cells = top_cells(heatmap, k=len(truth))
            del heatmap  # done with the detector's output: its arena piece is free for the recognizer
            out = recognizer.run(crops_at(image, cells))
            found = ", ".join(
                f"({cy * STRIDE},{cx * STRIDE}) class {int(p.argmax())} mask {int((m > 0.5).sum())} px"
                for (cy, cx), p, m in zip(cells, out["probs"], out["mask"])
            )
            print(f"frame {seed}: objects at {sorted(truth)}\n         found {found}")
            del out
        print()
        print(arena.report())
        stats = arena.stats()
        print(f"arena: {stats.bytes_reserved} bytes reserved, peak lent out {stats.peak_bytes_live} bytes")


if __name__ == "__main__":
    main()
