"""Tests for facebatch.scan.discovery: walking, filtering, links, and every way a folder can be odd."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import dataset, hard_manifest
from facebatch.scan import discovery
from facebatch.imageload import RAW_EXTENSIONS
from facebatch.scan.discovery import PHOTO_EXTENSIONS, Discovery, PhotoFile, discover
from facebatch.errors import FacebatchError



@pytest.fixture
def enforced_permissions(tmp_path: Path) -> None:
    """Skip unless mode-000 files are really unreadable here (root, with its usual capabilities,
    reads them anyway; the simulated twins of these tests run everywhere)."""
    probe = tmp_path / "permission_probe"
    probe.write_bytes(b"")
    probe.chmod(0)
    try:
        probe.open("rb").close()
    except PermissionError:
        return
    finally:
        probe.chmod(0o644)
        probe.unlink()
    pytest.skip("file permissions are not enforced for this user (root?)")


def make_files(root: Path, *relative_paths: str) -> None:
    for relative_path in relative_paths:
        path = root / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)


def relative_paths(result: Discovery, root: Path) -> list[str]:
    return [Path(photo.path).relative_to(root).as_posix() for photo in result.photos]


# --- basics ----------------------------------------------------------------------------------


def test_extension_sets() -> None:
    assert PHOTO_EXTENSIONS == {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"} | RAW_EXTENSIONS
    assert {".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2"} <= RAW_EXTENSIONS


def test_finds_photos_recursively_sorted_with_any_extension_case(tmp_path: Path) -> None:
    make_files(
        tmp_path,
        "z.jpg", "a.JPG", "b.jpeg", "c.Png", "d.webp", "e.bmp", "f.TIF", "g.tiff", "h.gif",
        "sub/deep/i.JpEg", "sub/j.png",
        "notes.txt", "movie.mp4", "sub/raw.cr2", "noext",
    )  # fmt: skip
    result = discover([tmp_path])
    assert relative_paths(result, tmp_path) == [
        "a.JPG", "b.jpeg", "c.Png", "d.webp", "e.bmp", "f.TIF", "g.tiff", "h.gif", "movie.mp4",
        "sub/deep/i.JpEg", "sub/j.png", "sub/raw.cr2", "z.jpg",
    ]  # fmt: skip
    assert result.warnings == []
    assert "movie.mp4" not in relative_paths(discover([tmp_path], videos=False), tmp_path)


def test_a_jpeg_beside_its_raw_is_one_photo_listed_as_the_raw(tmp_path: Path) -> None:
    make_files(tmp_path, "IMG_1.CR2", "IMG_1.JPG", "IMG_2.nef", "img_2.jpg", "IMG_3.JPG", "IMG_4.dng", "IMG_4.png",
               "other/IMG_1.JPG")  # fmt: skip
    result = discover([tmp_path])
    assert relative_paths(result, tmp_path) == ["IMG_1.CR2", "IMG_2.nef", "IMG_3.JPG", "IMG_4.dng", "IMG_4.png",
                                                "other/IMG_1.JPG"]  # fmt: skip
    assert result.paired == 2


def test_photo_file_records_absolute_path_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "album").mkdir()
    photo = tmp_path / "album" / "p.jpg"
    photo.write_bytes(b"12345")
    os.utime(photo, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    monkeypatch.chdir(tmp_path)
    [found] = discover(["album"]).photos  # a relative root gives absolute paths
    assert found == PhotoFile(path=str(photo), size_bytes=5, mtime_ns=1_600_000_000_123_456_789)


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    make_files(tmp_path, "a.jpg", ".b.jpg", ".thumbnails/c.jpg", "sub/.cache/d.jpg", "sub/e.jpg")
    assert relative_paths(discover([tmp_path]), tmp_path) == ["a.jpg", "sub/e.jpg"]


def test_empty_folder_gives_no_photos(tmp_path: Path) -> None:
    assert discover([tmp_path]) == Discovery(photos=[], warnings=[])


def test_single_photo_file_as_root(tmp_path: Path) -> None:
    make_files(tmp_path, "one.PNG", "other.jpg")
    result = discover([tmp_path / "one.PNG"])
    assert [photo.path for photo in result.photos] == [str(tmp_path / "one.PNG")]


def test_a_lone_string_is_one_root_and_one_pattern(tmp_path: Path) -> None:
    make_files(tmp_path, "a.jpg", "b.png")
    result = discover(str(tmp_path), exclude="*.png")  # type: ignore[arg-type]
    assert relative_paths(result, tmp_path) == ["a.jpg"]


def test_file_root_and_folder_root_overlapping_list_the_file_once(tmp_path: Path) -> None:
    make_files(tmp_path, "a.jpg")
    result = discover([tmp_path / "a.jpg", tmp_path])
    assert relative_paths(result, tmp_path) == ["a.jpg"]


# --- root errors -----------------------------------------------------------------------------


def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FacebatchError) as raised:
        discover([missing])
    assert str(raised.value) == f"photo folder not found: {missing}"


def test_root_that_is_not_a_folder_or_photo_is_an_error(tmp_path: Path) -> None:
    make_files(tmp_path, "notes.txt")
    with pytest.raises(FacebatchError) as raised:
        discover([tmp_path / "notes.txt"])
    assert str(raised.value) == f"not a folder: {tmp_path / 'notes.txt'}"


def test_unreadable_root_is_an_error_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated so that it also runs as root (which ignores permissions).
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if os.fspath(path) == str(tmp_path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(FacebatchError) as raised:
        discover([tmp_path])
    assert str(raised.value) == f"cannot read photo folder {tmp_path}: permission denied"


@pytest.mark.usefixtures("enforced_permissions")
def test_unreadable_root_is_an_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        with pytest.raises(FacebatchError, match="cannot read photo folder .*: permission denied"):
            discover([locked])
    finally:
        locked.chmod(0o755)


# --- problems inside the tree become warnings -----------------------------------------------


def test_unreadable_subfolder_is_a_warning_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_files(tmp_path, "a.jpg", "locked/b.jpg", "open/c.jpg")
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if os.fspath(path) == str(tmp_path / "locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = discover([tmp_path])
    assert relative_paths(result, tmp_path) == ["a.jpg", "open/c.jpg"]
    assert result.warnings == [f"cannot read folder {tmp_path / 'locked'}: permission denied"]


@pytest.mark.usefixtures("enforced_permissions")
def test_unreadable_subfolder_is_a_warning(tmp_path: Path) -> None:
    make_files(tmp_path, "a.jpg", "locked/b.jpg")
    (tmp_path / "locked").chmod(0)
    try:
        result = discover([tmp_path])
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert relative_paths(result, tmp_path) == ["a.jpg"]
    assert len(result.warnings) == 1 and "permission denied" in result.warnings[0]


def test_file_that_vanishes_before_stat_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_files(tmp_path, "sub/a.jpg", "sub/gone.jpg")
    gone = tmp_path / "sub" / "gone.jpg"
    real_list_folder = discovery._list_folder

    def list_then_delete(path: str) -> list[os.DirEntry[str]]:
        entries = real_list_folder(path)
        if path == str(tmp_path / "sub"):
            gone.unlink()  # deleted after listing, before the stat
        return entries

    monkeypatch.setattr(discovery, "_list_folder", list_then_delete)
    result = discover([tmp_path])
    assert relative_paths(result, tmp_path) == ["sub/a.jpg"]
    assert result.warnings == [f"skipped {gone}: file vanished during the scan"]


def test_broken_link_is_a_warning(tmp_path: Path) -> None:
    make_files(tmp_path, "a.jpg")
    (tmp_path / "dead.jpg").symlink_to(tmp_path / "missing.jpg")
    result = discover([tmp_path])
    assert relative_paths(result, tmp_path) == ["a.jpg"]
    assert result.warnings == [f"skipped {tmp_path / 'dead.jpg'}: broken link"]


def test_unreadable_file_is_still_listed(tmp_path: Path) -> None:
    # Permission 000 files become error rows later, so the scan must report them.
    make_files(tmp_path, "secret.jpg")
    (tmp_path / "secret.jpg").chmod(0)
    try:
        assert relative_paths(discover([tmp_path]), tmp_path) == ["secret.jpg"]
    finally:
        (tmp_path / "secret.jpg").chmod(0o644)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_named_like_a_photo_is_not_listed(tmp_path: Path) -> None:
    # Reading a FIFO would block the worker forever.
    os.mkfifo(tmp_path / "pipe.jpg")
    assert discover([tmp_path]).photos == []


# --- skip_dirs, links, overlapping roots -----------------------------------------------------


def test_skip_dirs_compared_by_real_path(tmp_path: Path) -> None:
    make_files(tmp_path, "a.jpg", "facebatch-library/thumbs/t.jpg", "sub/b.jpg")
    (tmp_path / "alias").symlink_to(tmp_path / "facebatch-library")
    spelled_differently = f"{tmp_path}/sub/../alias"  # '..' and a link: same folder
    result = discover([tmp_path], skip_dirs=[spelled_differently])
    assert relative_paths(result, tmp_path) == ["a.jpg", "sub/b.jpg"]


def test_missing_skip_dir_is_ignored(tmp_path: Path) -> None:
    make_files(tmp_path, "a.jpg")
    assert relative_paths(discover([tmp_path], skip_dirs=[tmp_path / "nope"]), tmp_path) == ["a.jpg"]


def test_symlinked_folder_is_followed_and_symlinked_file_keeps_link_path(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    make_files(outside, "o.jpg")
    library = tmp_path / "library"
    make_files(library, "a.jpg")
    (library / "linked_folder").symlink_to(outside)
    (library / "linked_file.jpg").symlink_to(outside / "o.jpg")
    result = discover([library])
    assert relative_paths(result, library) == ["a.jpg", "linked_file.jpg", "linked_folder/o.jpg"]
    link = next(photo for photo in result.photos if photo.path.endswith("linked_file.jpg"))
    assert link.size_bytes == 10  # the target's size, not the link's


def test_symlink_loops_terminate(tmp_path: Path) -> None:
    make_files(tmp_path, "a.jpg", "sub/b.jpg")
    (tmp_path / "sub" / "to_root").symlink_to(tmp_path)
    (tmp_path / "sub" / "to_self").symlink_to(tmp_path / "sub")
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")  # ELOOP: neither file nor folder
    result = discover([tmp_path])
    assert relative_paths(result, tmp_path) == ["a.jpg", "sub/b.jpg"]


def test_folder_reachable_directly_is_listed_under_its_real_path(tmp_path: Path) -> None:
    # 'a_link' sorts before 'z_real' and points at it: files must still appear once, under z_real.
    make_files(tmp_path, "z_real/p.jpg")
    (tmp_path / "a_link").symlink_to(tmp_path / "z_real")
    assert relative_paths(discover([tmp_path]), tmp_path) == ["z_real/p.jpg"]


def test_two_links_to_one_folder_list_it_once_under_the_first_by_name(tmp_path: Path) -> None:
    make_files(tmp_path, "outside/o.jpg", "library/a.jpg")
    for name in ("m_link", "b_link", "x_link"):
        (tmp_path / "library" / name).symlink_to(tmp_path / "outside")
    result = discover([tmp_path / "library"])
    assert relative_paths(result, tmp_path / "library") == ["a.jpg", "b_link/o.jpg"]


@pytest.mark.parametrize("inner_first", [True, False])
def test_overlapping_roots_list_each_file_once(tmp_path: Path, inner_first: bool) -> None:
    make_files(tmp_path, "a.jpg", "inner/b.jpg", "inner/deep/c.jpg")
    roots = [tmp_path / "inner", tmp_path] if inner_first else [tmp_path, tmp_path / "inner"]
    result = discover(roots, exclude=["inner/deep/*"])  # globs see paths relative to the outer root
    assert relative_paths(result, tmp_path) == ["a.jpg", "inner/b.jpg"]


# --- include / exclude -----------------------------------------------------------------------

TREE = (
    "a.jpg", "b.png", "C.PNG", "trash/t.jpg", "trash/deep/u.jpg", "album/trash/v.jpg",
    "2019/x.jpg", "2019/sub/y.png", "2020/z.jpg", "album/skip_me.jpg", "album/keep.jpg",
)  # fmt: skip


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        pytest.param(
            [], ["*.png"],
            ["2019/x.jpg", "2020/z.jpg", "a.jpg", "album/keep.jpg", "album/skip_me.jpg",
             "album/trash/v.jpg", "trash/deep/u.jpg", "trash/t.jpg"],
            id="exclude-extension-any-depth-any-case"),
        pytest.param(
            [], ["trash/*"],
            ["2019/sub/y.png", "2019/x.jpg", "2020/z.jpg", "C.PNG", "a.jpg", "album/keep.jpg",
             "album/skip_me.jpg", "album/trash/v.jpg", "b.png"],
            id="exclude-top-folder-relative-path"),
        pytest.param(
            [], ["trash"],
            ["2019/sub/y.png", "2019/x.jpg", "2020/z.jpg", "C.PNG", "a.jpg", "album/keep.jpg",
             "album/skip_me.jpg", "b.png"],
            id="exclude-folder-name-any-depth"),
        pytest.param(
            [], ["**/trash/**"],
            ["2019/sub/y.png", "2019/x.jpg", "2020/z.jpg", "C.PNG", "a.jpg", "album/keep.jpg",
             "album/skip_me.jpg", "b.png"],
            id="doublestar-matches-zero-or-more-folders"),
        pytest.param(
            ["2019/*"], [], ["2019/sub/y.png", "2019/x.jpg"],
            id="include-folder-star-crosses-slash"),
        pytest.param(
            ["2019"], ["*.png"], ["2019/x.jpg"],
            id="include-folder-name-and-exclude-extension"),
        pytest.param(
            ["*.jpg"], ["skip_*", "trash"],
            ["2019/x.jpg", "2020/z.jpg", "a.jpg", "album/keep.jpg"],
            id="include-extension-exclude-name-and-folder"),
        pytest.param(
            ["**/*.png"], [], ["2019/sub/y.png", "C.PNG", "b.png"],
            id="doublestar-slash-matches-top-level"),
        pytest.param(
            ["20[12]?/*"], ["*/sub/*"], ["2019/x.jpg", "2020/z.jpg"],
            id="character-class-and-question-mark"),
        pytest.param(
            [], ["[!a-z]*"],  # the folders 2019/ and 2020/ start with a digit; 'C' counts as a-z
            ["C.PNG", "a.jpg", "album/keep.jpg", "album/skip_me.jpg", "album/trash/v.jpg",
             "b.png", "trash/deep/u.jpg", "trash/t.jpg"],
            id="negated-character-class"),
    ],
)  # fmt: skip
def test_include_and_exclude_globs(
    tmp_path: Path, include: list[str], exclude: list[str], expected: list[str]
) -> None:
    make_files(tmp_path, *TREE)
    result = discover([tmp_path], include=include, exclude=exclude)
    assert relative_paths(result, tmp_path) == expected


# --- HEIF ------------------------------------------------------------------------------------


def test_heif_files_are_listed_by_the_default_install(tmp_path: Path) -> None:
    make_files(tmp_path, "a.jpg", "b.HEIC", "sub/c.heif")
    result = discover([tmp_path])
    assert relative_paths(result, tmp_path) == ["a.jpg", "b.HEIC", "sub/c.heif"]
    assert result.warnings == []


# --- scale and real data ---------------------------------------------------------------------


def test_twenty_thousand_files_take_well_under_a_few_seconds(tmp_path: Path) -> None:
    # Hard links to one file: creating 20,000 inodes takes seconds on some disks, and the walk
    # (one stat per name) costs the same either way.
    source = tmp_path / "source.jpg"
    source.write_bytes(b"x")
    for folder_index in range(100):
        folder = tmp_path / f"f{folder_index:03d}"
        folder.mkdir()
        for file_index in range(200):
            os.link(source, folder / f"img_{file_index:04d}.jpg")
    source.unlink()
    started = time.perf_counter()
    result = discover([tmp_path], exclude=["*/img_0000.jpg"])
    elapsed = time.perf_counter() - started
    assert len(result.photos) == 100 * 199
    assert elapsed < 4.0, f"discover took {elapsed:.2f} s for 20,000 files"


def test_hard_dataset_lists_exactly_the_manifest_images() -> None:
    hard = dataset("hard")
    expected = sorted((hard / row["path"]).as_posix() for row in hard_manifest(hard))
    result = discover([hard])
    assert [photo.path for photo in result.photos] == expected
    assert result.warnings == []
