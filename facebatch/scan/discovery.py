"""Find the photo files under one or more folders.

`discover()` returns a `Discovery`: the photos, sorted by path, and a list of warnings for what it
had to skip (unreadable sub-folders, files that vanished mid-scan, broken links, HEIF files without
HEIF support). Only problems with the roots themselves are errors (`InputError`).

Walking rules:
- recursive, with os.scandir (one stat per photo and per folder: 100k files take seconds);
- names starting with '.' (files and folders) are skipped, as is every folder in `skip_dirs`
  (compared by identity, i.e. real path, so any path spelling or link to it is skipped too);
- symlinked folders are followed, but each folder is walked at most once (by (st_dev, st_ino)):
  link loops end, overlapping roots list each file once, and folders reachable without a link
  are walked first so that a file is listed under its real folder rather than a link's;
- symlinked files are listed under their link's path;
- a JPEG or HEIC beside a RAW of the same name (a camera's RAW + JPEG mode) is one photo with it:
  listed as the RAW only, and counted in `paired`.

Include/exclude globs (fnmatch syntax, case-insensitive since photo names mix .JPG and .jpg):
a pattern matches a file when it matches the file's path relative to its root ('/'-separated),
its bare name, or the relative path or name of any folder above it. So `*.png`, `trash/*`,
`trash`, `**/trash/**` and `2019-*` all do what they look like. `*` crosses '/' like fnmatch's;
`**/` also matches zero folders. A file is kept when it matches any include (or there are none)
and no exclude. Excluded folders are not walked at all.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from facebatch.errors import InputError
from facebatch.imageload import RAW_EXTENSIONS
from facebatch.videoload import VIDEO_EXTENSIONS

PHOTO_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"}
) | RAW_EXTENSIONS
# What a camera writes beside its RAW (RAW + JPEG mode): one photo to the user, scanned as the RAW.
RENDITION_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".heic", ".heif"})

_T = TypeVar("_T")


@dataclass(frozen=True)
class PhotoFile:
    path: str  # absolute path as found (symlinked files keep their link path)
    size_bytes: int
    mtime_ns: int  # st_mtime_ns
    rendition: str | None = None  # a RAW's JPEG beside it: what the scan reads when LibRaw can't read the RAW


@dataclass(frozen=True)
class Discovery:
    photos: list[PhotoFile]  # sorted by path, each path once
    warnings: list[str]  # one line per thing skipped that the user may want to know about
    paired: int = 0  # JPEGs (or HEICs) beside a RAW of the same name: the same photo, scanned as the RAW


def renditions_of_raws(names: Iterable[str]) -> set[str]:
    """The names among one folder's that are a RAW's rendition: IMG_1.JPG beside IMG_1.CR2."""
    names = list(names)
    raw_stems = {os.path.splitext(n)[0].lower() for n in names if os.path.splitext(n)[1].lower() in RAW_EXTENSIONS}
    return {n for n in names if os.path.splitext(n)[1].lower() in RENDITION_EXTENSIONS
            and os.path.splitext(n)[0].lower() in raw_stems}


def photo_extensions(videos: bool = True) -> frozenset[str]:
    """Lower-case extensions (with the dot) that discover() lists."""
    return PHOTO_EXTENSIONS | VIDEO_EXTENSIONS if videos else PHOTO_EXTENSIONS


def discover(
    roots: Sequence[str | Path],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    skip_dirs: Sequence[str | Path] = (),
    videos: bool = True,
) -> Discovery:
    """List the photo files under `roots` (folders, or single photo files).

    Raises InputError when a root is missing, unreadable, or neither a folder nor a photo.
    """
    roots, skip_dirs = _as_list(roots), _as_list(skip_dirs)
    walker = _Walker(
        extensions=photo_extensions(videos),
        include=_GlobSet(include),
        exclude=_GlobSet(exclude),
        visited=_folder_identities(skip_dirs),  # skip folders count as already walked
    )
    folder_roots: list[str] = []
    for root in roots:
        root_path = os.path.abspath(os.fspath(root))
        root_stat = _stat_root(root_path)
        if stat.S_ISDIR(root_stat.st_mode):
            _check_root_readable(root_path)  # fail before a long walk, not in the middle of it
            folder_roots.append(root_path)
        elif _has_photo_extension(root_path, walker.extensions):
            walker.add_file_root(root_path, root_stat)
        else:
            raise InputError(f"not a folder: {root_path}")
    # Outer folders first, so that a folder inside another root is reached as part of the outer
    # one and its files' relative paths (used by the globs) don't depend on the roots' order.
    walker.add_folder_roots(sorted(folder_roots, key=os.path.realpath))
    walker.walk()
    return walker.result()


# --- roots -----------------------------------------------------------------------------------


def _stat_root(root_path: str) -> os.stat_result:
    try:
        return os.stat(root_path)
    except FileNotFoundError:
        raise InputError(f"photo folder not found: {root_path}") from None
    except OSError as error:
        raise InputError(f"cannot read photo folder {root_path}: {_reason(error)}") from None


def _check_root_readable(root_path: str) -> None:
    try:
        _list_folder(root_path)
    except OSError as error:
        raise InputError(f"cannot read photo folder {root_path}: {_reason(error)}") from None


def _folder_identities(folders: Iterable[str | Path]) -> set[tuple[int, int]]:
    identities = set()
    for folder in folders:
        try:
            folder_stat = os.stat(folder)
        except OSError:
            continue  # a skip folder that doesn't exist (yet) skips nothing
        identities.add((folder_stat.st_dev, folder_stat.st_ino))
    return identities


# --- globs -----------------------------------------------------------------------------------


class _GlobSet:
    """Compiled include or exclude patterns."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = [_glob_to_regex(pattern) for pattern in _as_list(patterns)]

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, relative_path: str, name: str) -> bool:
        return any(p.fullmatch(relative_path) or p.fullmatch(name) for p in self.patterns)


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    """fnmatch-style glob -> regex; `**/` may match zero folders, `*` crosses '/'."""
    pattern = pattern.replace(os.sep, "/").removeprefix("./").strip("/")
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern[i] == "*":
            parts.append(".*")
            i += 1
        elif pattern[i] == "?":
            parts.append(".")
            i += 1
        elif pattern[i] == "[" and (end := _class_end(pattern, i)) > 0:
            parts.append(_char_class(pattern[i + 1 : end]))
            i = end + 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _class_end(pattern: str, start: int) -> int:
    """Index of the ']' closing the class opened at `start`, or -1 (then '[' is literal)."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "!":
        i += 1
    if i < len(pattern) and pattern[i] == "]":  # a leading ']' is a member, as in fnmatch
        i += 1
    end = pattern.find("]", i)
    return end


def _char_class(body: str) -> str:
    body = body.replace("\\", "\\\\")
    if body.startswith("!"):
        body = "^" + body[1:]
    elif body.startswith("^"):
        body = "\\" + body
    return f"[{body}]"


# --- walking ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Folder:
    path: str  # absolute path as reached (may run through symlinks)
    relative_path: str  # relative to its root, '/'-separated; "" for the root itself
    included: bool  # an include pattern matched this folder or one above it


@dataclass
class _Walker:
    extensions: frozenset[str]
    include: _GlobSet
    exclude: _GlobSet
    # Folders already walked (or to skip), by identity: ends symlink loops and root overlaps.
    visited: set[tuple[int, int]] = field(default_factory=set)
    # Folders reached without a symlink are walked before those reached through one.
    real_folders: list[_Folder] = field(default_factory=list)
    linked_folders: list[_Folder] = field(default_factory=list)
    photos: dict[str, PhotoFile] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def add_file_root(self, path: str, file_stat: os.stat_result) -> None:
        name = os.path.basename(path)
        if self._selected(name, name, folder_included=False):
            self._add_photo(path, file_stat)

    def add_folder_roots(self, paths: Sequence[str]) -> None:
        # A stack: the first root is walked first, and the folders it contains (another root
        # among them, maybe) before the next root, which is then already visited.
        self.real_folders.extend(_Folder(path, "", included=False) for path in reversed(paths))

    def walk(self) -> None:
        while self.real_folders or self.linked_folders:
            if self.real_folders:
                self._walk_folder(self.real_folders.pop())
            else:
                self._walk_folder(self.linked_folders.pop())

    def result(self) -> Discovery:
        by_folder: dict[str, list[str]] = {}
        for path in self.photos:
            by_folder.setdefault(os.path.dirname(path), []).append(os.path.basename(path))
        paired = {os.path.join(folder, name) for folder, names in by_folder.items() for name in renditions_of_raws(names)}
        rendition_of = {os.path.splitext(path)[0].lower(): path for path in paired}  # by folder and stem
        photos = [replace(self.photos[path], rendition=rendition_of.get(os.path.splitext(path)[0].lower()))
                  for path in sorted(self.photos) if path not in paired]
        return Discovery(photos=photos, warnings=list(self.warnings), paired=len(paired))

    def _walk_folder(self, folder: _Folder) -> None:
        try:
            folder_stat = os.stat(folder.path)
        except OSError as error:
            self.warnings.append(f"skipped folder {folder.path}: {_reason(error)}")
            return
        identity = (folder_stat.st_dev, folder_stat.st_ino)
        if identity in self.visited:
            return
        self.visited.add(identity)
        try:
            entries = _list_folder(folder.path)
        except OSError as error:
            self.warnings.append(f"cannot read folder {folder.path}: {_reason(error)}")
            return
        self._scan_entries(folder, entries)

    def _scan_entries(self, folder: _Folder, entries: list[os.DirEntry[str]]) -> None:
        # Reverse name order: the folder stacks then pop sub-folders in name order, so when two
        # links lead to one folder, the same one wins on every run.
        for entry in sorted(entries, key=lambda entry: entry.name, reverse=True):
            if entry.name.startswith("."):
                continue
            relative_path = f"{folder.relative_path}/{entry.name}" if folder.relative_path else entry.name
            try:
                is_folder = entry.is_dir()  # follows symlinks
            except OSError as error:
                self.warnings.append(f"skipped {entry.path}: {_reason(error)}")
                continue
            if is_folder:
                self._queue_folder(entry, relative_path, folder)
            else:
                self._consider_file(entry, relative_path, folder)

    def _queue_folder(self, entry: os.DirEntry[str], relative_path: str, parent: _Folder) -> None:
        if self.exclude.matches(relative_path, entry.name):
            return
        included = parent.included or self.include.matches(relative_path, entry.name)
        child = _Folder(entry.path, relative_path, included)
        (self.linked_folders if _is_symlink(entry) else self.real_folders).append(child)

    def _consider_file(self, entry: os.DirEntry[str], relative_path: str, folder: _Folder) -> None:
        extension = os.path.splitext(entry.name)[1].lower()
        if extension not in self.extensions:
            return
        if not self._selected(relative_path, entry.name, folder.included):
            return
        try:
            file_stat = entry.stat()  # follows symlinks: size and mtime of the photo itself
        except FileNotFoundError:
            what = "broken link" if _is_symlink(entry) else "file vanished during the scan"
            self.warnings.append(f"skipped {entry.path}: {what}")
            return
        except OSError as error:
            self.warnings.append(f"skipped {entry.path}: {_reason(error)}")
            return
        if stat.S_ISREG(file_stat.st_mode):  # not a FIFO or device that happens to end in .jpg
            self._add_photo(entry.path, file_stat)

    def _selected(self, relative_path: str, name: str, folder_included: bool) -> bool:
        if self.exclude.matches(relative_path, name):
            return False
        return not self.include or folder_included or self.include.matches(relative_path, name)

    def _add_photo(self, path: str, file_stat: os.stat_result) -> None:
        self.photos[path] = PhotoFile(
            path=path, size_bytes=file_stat.st_size, mtime_ns=file_stat.st_mtime_ns
        )


def _as_list(items: Sequence[_T] | _T) -> list[_T]:
    """A lone str or Path is one item, not a sequence of characters."""
    if isinstance(items, (str, Path)):
        return [items]  # type: ignore[list-item]
    return list(items)  # type: ignore[arg-type]


def _list_folder(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as entries:
        return list(entries)


def _has_photo_extension(path: str, extensions: frozenset[str]) -> bool:
    return os.path.splitext(path)[1].lower() in extensions


def _is_symlink(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _reason(error: OSError) -> str:
    """'permission denied' rather than '[Errno 13] Permission denied: /x' (the path is already said)."""
    if isinstance(error, PermissionError):
        return "permission denied"
    return (error.strerror or str(error) or type(error).__name__).lower()
