"""Atomic file writes: write a temporary file in the same folder, fsync, then rename, so a
reader (or a resumed run) sees either the old file or the whole new one, never a part.

A full disk or quota (ENOSPC, EDQUOT) while writing raises :class:`DiskFullError`: one line
naming the file, the bytes it needed and the bytes free there. The old file is untouched and
the temporary one removed, so the newest checkpoint and the metrics written so far stay valid.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from avsf.errors import UserError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free to this user on the filesystem holding `path` (its nearest existing folder)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


class DiskFullError(UserError):
    """A write that found no room (full disk or quota): which file, how much, what to do."""

    def __init__(self, path: str | os.PathLike, *, needed: int | None, error: OSError) -> None:
        self.path, self.needed, self.free = Path(path), needed, free_bytes(path)
        what = "quota exceeded" if error.errno == errno.EDQUOT else "no space left on device"
        super().__init__(
            f"disk full ({what}) writing {self.path}: needed {_size(needed)}, {_size(self.free)} free there; "
            f"nothing already written was changed. Free space (or raise the quota) on that filesystem, "
            f"or move the run directory elsewhere, then run again: it resumes from its newest checkpoint")


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


@contextlib.contextmanager
def disk_full_reported(path: str | os.PathLike, *, needed: int | None = None) -> Iterator[None]:
    """Turn a full-disk OSError raised inside into a :class:`DiskFullError` naming `path`
    (or the file the error names)."""
    try:
        yield
    except OSError as e:
        if not is_disk_full(e):
            raise
        raise DiskFullError(e.filename or path, needed=needed, error=e) from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _write_all(f: io.BufferedWriter, data: bytes | bytearray | memoryview) -> None:
    f.write(data)


def atomic_write(path: str | os.PathLike, data: bytes | bytearray | memoryview | Callable[[io.BufferedWriter], None]) -> Path:
    """Write `data` (bytes, or a callable ``write(f)``) to a temporary file beside `path`, then
    rename it to `path`. Give bytes where the size is known: a full disk then reports it."""
    path = Path(path)
    needed = len(data) if isinstance(data, (bytes, bytearray, memoryview)) else None
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            if needed is None:
                data(f)  # type: ignore[operator]
            else:
                _write_all(f, data)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_disk_full(e):  # named by the file we meant to write, not the temporary one
            raise DiskFullError(path, needed=needed, error=e) from e  # type: ignore[arg-type]
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> Path:
    """Rewrite a whole JSON-lines file atomically (one record per line)."""
    return atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
