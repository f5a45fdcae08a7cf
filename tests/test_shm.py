"""Cross-process shared memory: named regions and tensor tables, attached from other processes, and cleanup after
normal exits and kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import unirt
from unirt import InputError, SharedRegion, SharedTensors

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX shared memory (Linux, macOS)")


def exists(name: str) -> bool:
    try:
        SharedRegion.attach(name).close()
        return True
    except FileNotFoundError:
        return False


def wait_gone(name: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not exists(name):
            return True
        time.sleep(0.02)
    return False


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS)
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def wait_dead(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def python(code: str) -> subprocess.Popen:
    """Another Python process importing the installed unirt (not the source tree in the working directory)."""
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; del sys.path[0]\n" + textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
    )


def test_region_views_and_attach_in_process():
    with SharedRegion.create(4096) as region:
        assert region.owner and region.size == 4096 and region.name.startswith("/unirt.")
        x = region.ndarray((4, 8), np.float32, offset=128)
        x[:] = np.arange(32).reshape(4, 8)
        other = SharedRegion.attach(region.name)
        assert not other.owner
        np.testing.assert_array_equal(other.ndarray((4, 8), np.float32, offset=128), x)
        ro = SharedRegion.attach(region.name.lstrip("/"), writable=False)  # the leading "/" is optional
        view = ro.ndarray(32, np.float32, offset=128)
        assert not view.flags.writeable and view[31] == 31
        other.close()
        ro.close()
    assert not exists(region.name)
    assert x[3, 7] == 31  # a view keeps the mapping after the name is gone


def test_region_errors():
    with SharedRegion.create(256) as region:
        with pytest.raises(InputError, match="does not fit"):
            region.ndarray((65,), np.float32)
        with pytest.raises(InputError, match="does not fit"):
            region.ndarray((1,), np.float32, offset=254)
        with pytest.raises(InputError, match="Python objects"):
            region.ndarray((1,), object)
        with pytest.raises(FileExistsError):
            SharedRegion.create(256, name=region.name)
    with pytest.raises(FileNotFoundError):
        SharedRegion.attach("/unirt.does-not-exist")
    with pytest.raises(InputError, match="positive size"):
        SharedRegion.create(0)
    with pytest.raises(InputError, match="no '/'"):
        SharedRegion.create(16, name="a/b")
    region.close()  # idempotent
    with pytest.raises(InputError, match="closed"):
        region.ndarray(1, np.uint8)


def test_another_process_reads_inputs_and_writes_outputs():
    tensors = SharedTensors.create(
        {
            "images": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
            "ids": np.array([7, 9], np.int64),
            "scores": ((2, 5), np.float32),
        }
    )
    assert set(tensors) == {"images", "ids", "scores"} and tensors["scores"].shape == (2, 5)
    slots = tensors.slots()
    assert all(s.offset % 64 == 0 for s in slots.values()) and slots["images"].nbytes == 96
    child = python(f"""
        import numpy as np, unirt
        t = unirt.SharedTensors.attach({tensors.name!r})
        t["scores"][:] = t["images"].sum(axis=(1, 2))[:, None] + t["ids"][:, None]
        print(sorted(t), t["images"].dtype, t["ids"].tolist())
    """)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    assert out.strip() == "['ids', 'images', 'scores'] float32 [7, 9]"
    expected = np.arange(24, dtype=np.float32).reshape(2, 3, 4).sum(axis=(1, 2))[:, None] + np.array([[7], [9]])
    np.testing.assert_array_equal(tensors["scores"], np.broadcast_to(expected, (2, 5)))
    tensors.close()


def test_rewrite_and_refresh_follow_new_layouts():
    writer = SharedTensors.create({"x": np.zeros(4, np.float32)}, capacity=8192)
    reader = SharedTensors.attach(writer.name)
    assert reader["x"].shape == (4,)
    assert writer.rewrite({"x": np.ones(4, np.float32)})  # same layout: copy only
    reader.refresh()
    assert reader["x"].sum() == 4
    assert writer.rewrite({"y": np.full((3, 3), 2, np.int16), "z": ((5,), np.uint8)})
    reader.refresh()
    assert set(reader) == {"y", "z"} and reader["y"].dtype == np.int16 and reader["y"].sum() == 18
    assert not writer.rewrite({"big": ((10_000,), np.float32)})  # does not fit: nothing changes
    reader.refresh()
    assert set(reader) == {"y", "z"}
    assert SharedTensors.size_for({"big": ((10_000,), np.float32)}) > 40_000
    reader.close()
    writer.close()
    with pytest.raises(InputError, match="no unirt tensor table"):
        with SharedRegion.create(128) as raw:
            SharedTensors.attach(raw.name)


def test_segments_are_removed_when_the_owner_exits_normally():
    child = python("""
        import unirt
        kept = unirt.SharedRegion.create(1 << 16)
        also = unirt.SharedTensors.create({"x": ((16,), "float32")})
        print(kept.name, also.name, flush=True)
        input()
    """)
    names = child.stdout.readline().split()
    assert len(names) == 2 and all(exists(n) for n in names)
    child.communicate("\n", timeout=60)
    assert child.returncode == 0
    assert all(wait_gone(n) for n in names)


def test_segments_are_removed_when_the_owner_is_killed():
    child = python("""
        import unirt, unirt.shm
        regions = [unirt.SharedRegion.create(1 << 16) for _ in range(3)]
        print(*[r.name for r in regions], unirt.shm._reaper.pid, flush=True)
        input()
    """)
    *names, reaper = child.stdout.readline().split()
    assert len(names) == 3 and all(exists(n) for n in names)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert all(wait_gone(n) for n in names), "kill -9 left shared-memory segments behind"
    assert wait_dead(int(reaper)), "the reaper outlived its owner"


def test_a_forked_child_does_not_remove_its_parents_segments():
    # In a fresh process: forking pytest itself (with engine threads running) is not something to test with.
    child = python("""
        import os, unirt
        region = unirt.SharedRegion.create(4096)
        pid = os.fork()
        if pid == 0:
            del region  # the inherited object goes: the child does not own the name
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(status, region.name, flush=True)
        input()
    """)
    status, name = child.stdout.readline().split()
    assert status == "0" and exists(name)
    child.communicate("\n", timeout=60)
    assert child.returncode == 0 and wait_gone(name)


def test_session_regions_are_cleaned_when_a_process_with_isolated_sessions_is_killed(model):
    path = model("dynamic_mlp")
    child = python(f"""
        import numpy as np, unirt, unirt.shm
        s = unirt.Session({str(path)!r}, backend="onnxruntime", isolate=True)
        s.run(np.ones((2, 8), np.float32))
        print(*sorted(unirt.shm._reaper._names), s._runner.pid, flush=True)
        input()
    """)
    *names, worker = child.stdout.readline().split()
    assert len(names) == 2 and all(exists(n) for n in names)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    assert all(wait_gone(n) for n in names)
    assert wait_dead(int(worker)), "the isolated worker outlived its killed parent"


def test_public_api():
    assert unirt.SharedRegion is SharedRegion and unirt.SharedTensors is SharedTensors
    assert "SharedTensors" in unirt.__all__ and "TensorSlot" in unirt.__all__


def _damage(field: str):
    """Byte offset and new bytes for one field of the first entry of a table holding {"x": float32[2, 3]}."""
    import struct

    from unirt.shm import _ENTRY, _HEADER

    entry = _HEADER.size
    shape = entry + _ENTRY.size
    name = shape + 8 * 2
    dtype = name + 1
    return {
        "count": (12, struct.pack("<I", 1000)),
        "end": (16, struct.pack("<Q", 1 << 40)),
        "ndim": (entry + 3, struct.pack("<B", 255)),
        "offset": (entry + 8, struct.pack("<Q", 1 << 40)),
        "shape": (shape, struct.pack("<q", -5)),
        "name": (name, b"\xff"),
        "dtype garbage": (dtype, b"zz9"),
        "dtype object": (dtype, b"|O8"),
    }[field]


@pytest.mark.parametrize("field", ["count", "end", "ndim", "offset", "shape", "name", "dtype garbage", "dtype object"])
def test_a_damaged_table_is_an_input_error(field):
    with SharedTensors.create({"x": np.ones((2, 3), np.float32)}) as good:
        assert bytes(good.region.buffer()[_damage("name")[0] :][:4]) == b"x<f4"  # the layout _damage assumes
        at, data = _damage(field)
        buf = good.region.buffer()
        buf[at : at + len(data)] = data
        buf.release()
        with pytest.raises(InputError, match="the shared tensor table is damaged"):
            SharedTensors.attach(good.name)
