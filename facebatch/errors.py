"""Exceptions shared by every stage. The CLI turns each class into one line and an exit code
(`facebatch.cli.EXIT_CODES`); library code never chooses an exit code."""

from __future__ import annotations

from pathlib import Path


class FacebatchError(Exception):
    """An error the user caused or can fix: printed as one line, never a traceback."""


class UsageError(FacebatchError):
    """A bad option or argument value: the command line must change."""


class UncalibratedModel(UsageError):
    """The library's embeddings come from weights whose distance scale was never measured."""


class NotFound(FacebatchError):
    """Something the command names is not there: a cluster number, a face id, a person."""


class InputError(FacebatchError):
    """An input file or folder can't be used: a missing photo folder, a malformed CSV, a photo
    without a face."""


class OutputError(FacebatchError):
    """The output can't be written where asked: a missing folder, a path that is not a file."""


class LibraryMissing(FacebatchError):
    """No library (or nothing of what the command needs in it yet)."""

    def __init__(self, root: Path, message: str | None = None) -> None:
        super().__init__(
            message
            or f"no library at {root}: run `facebatch scan FOLDER` first, or point at one with "
            "--library DIR or the FACEBATCH_LIBRARY variable"
        )
        self.root = root


class LibraryBusy(FacebatchError):
    """Another facebatch command is writing to the library."""


class LibraryDamaged(FacebatchError):
    """A table of the library can't be read; `facebatch check` says what and repairs it."""


class DamagedPart(LibraryDamaged):
    """One part file of the photos or faces table can't be read."""

    def __init__(self, table: str, number: int, path: Path, reason: str) -> None:
        super().__init__(
            f"{table} part {path} is damaged ({reason}): `facebatch check --repair` sets it aside and the next "
            "`facebatch scan` scans its photos again"
        )
        self.table, self.number, self.path, self.reason = table, number, path, reason


class DeviceUnavailable(FacebatchError):
    """The device asked for (--device cuda) is not there."""


class PhotoError(Exception):
    """One photo could not be used. It becomes that photo's row (status `error`), never a crash.

    `kind` is a short stable word (`empty_file`, `not_an_image`, `truncated`, ...) so that the
    summary can count errors by kind; the message says what happened in words.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
