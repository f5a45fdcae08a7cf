"""Removes a process's shared-memory segments when it dies, however it dies (also kill -9).

Started by unirt.shm as `python -I -S _shm_reaper.py` on a process's first segment, in its own session so a
terminal's Ctrl-C does not reach it. It reads lines from its stdin, a pipe only the owner holds: "+name" when a
segment is created, "-name" when the owner removed it itself. End of file means the owner is gone: every name
still registered is unlinked. Uses the standard library only (no numpy, no unirt), so it starts in milliseconds.
"""

import os
import signal
import sys


def _unlink(name: str) -> None:
    try:
        import _posixshmem

        _posixshmem.shm_unlink(name)
    except FileNotFoundError:
        pass
    except ImportError:  # an interpreter without _posixshmem: Linux keeps POSIX shm in /dev/shm
        try:
            os.unlink("/dev/shm" + name)
        except FileNotFoundError:
            pass
    except OSError as exc:
        print(f"unirt shm reaper: cannot unlink {name}: {exc}", file=sys.stderr)


def main() -> None:
    names: set[str] = set()

    def cleanup(*_: object) -> None:
        for name in sorted(names):
            _unlink(name)
        os._exit(0)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, cleanup)
    for raw in sys.stdin.buffer:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        if line.startswith("+"):
            names.add(line[1:])
        elif line.startswith("-"):
            names.discard(line[1:])
    cleanup()


if __name__ == "__main__":
    main()
