"""Writing files without losing anything: the library's own files, and the outputs a user names.

`atomic_file`: a hidden temp file beside the target, fsync, rename: the target appears whole or
not at all. New files get the user's umask (0666 & ~umask, as `open` would), a replaced file keeps
its mode: a library holds biometric data, and `umask 077` must keep it private.

`output_file`: where a command writes what the user asked for (export, report, contact sheets):
  "-"                       standard output
  an existing device, pipe  written to directly (there is nothing to rename over)
  a symbolic link           followed: the target is replaced atomically, the link stays
  a regular file or a new   atomically, as above
  name in an existing folder
A missing folder is an error naming it (a typo in a path is reported, never created).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from facebatch.errors import OutputError

STDOUT = "-"


# The umask can only be read by setting it: two threads doing so at once (the review server writes
# thumbnails from several) could leave 0o022 in place of the user's mask. One at a time.
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """The existing file's permission bits, else what `open` would give a new file."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


@contextmanager
def atomic_file(path: Path, mode: str = "wb", encoding: str | None = None, make_parents: bool = True) -> Iterator[IO[Any]]:
    """A file that appears at `path` whole or not at all. The temp name starts with '.', which
    Parquet dataset readers skip."""
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    permissions = _mode_for(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json_map(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; {} when it is missing, unreadable or not an object (a cache)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_in_json_map(path: Path, key: str, value: Any) -> None:
    """Add key: value to the JSON object in `path`, atomically. Read just before writing: another
    process may have recorded its own key meanwhile."""
    atomic_write_json(path, {**read_json_map(path), key: value})


def atomic_write_table(path: Path, table: pa.Table, metadata: dict[str, str] | None = None) -> None:
    """Parquet through a temp file, straight into it: no second copy of a big table in memory."""
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    with atomic_file(path) as f:
        pq.write_table(table, f, compression="zstd")


# --------------------------------------------------------------------------- outputs the user names


def resolve_output(output: str | Path) -> Path | None:
    """The file to write for `output`: None for standard output, else a path whose folder exists.

    A symbolic link resolves to its target (which is what gets replaced); a folder is an error.
    """
    if str(output) == STDOUT:
        return None
    path = Path(output).expanduser()
    if path.is_symlink():
        path = path.resolve()
    if path.is_dir():
        raise OutputError(f"{output} is a folder: give a file name")
    if not path.parent.is_dir():
        raise OutputError(f"folder {path.parent} does not exist (for {output})")
    return path.absolute()


def is_special(path: Path) -> bool:
    """A device, pipe or socket: written to in place, never renamed over."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    return not stat.S_ISREG(mode)


@contextmanager
def output_file(output: str | Path, binary: bool = False) -> Iterator[IO[Any]]:
    """Open what the user named for writing (see the module docstring); text is UTF-8."""
    path = resolve_output(output)
    mode, encoding = ("wb", None) if binary else ("w", "utf-8")
    try:
        if path is None:
            stream = sys.stdout.buffer if binary else sys.stdout
            yield stream
            stream.flush()
        elif is_special(path):
            with open(path, mode, encoding=encoding) as f:
                yield f
        else:
            with atomic_file(path, mode, encoding, make_parents=False) as f:
                yield f
    except BrokenPipeError:
        raise  # the reader stopped (`| head`): click ends quietly, as Unix tools do
    except OSError as exc:
        raise OutputError(f"cannot write {output}: {exc.strerror or exc}") from None


def describe_output(output: str | Path) -> str:
    return "standard output" if str(output) == STDOUT else str(output)
