"""The review site and contact sheets: pages, links, pagination, thumbnails, and a real browser."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from conftest import PROJECT, add_people, people_library, run
from facebatch.people.actions import label_cluster
from facebatch.people.clustering import cluster_library
from facebatch.people.grouping import GroupingSettings
from facebatch.review import pages, report, sheets
from facebatch.review.thumbnails import MISSING_NAME, THUMBNAIL_SIZE, thumbnail_path
from facebatch.store import Library

PEOPLE = {"ann": 12, "bob": 7, "cat": 5}


@pytest.fixture
def library(tmp_path) -> Library:
    return people_library(tmp_path, PEOPLE)


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values["src"] or "")
        for key in ("href", "src"):
            if values.get(key):
                self.targets.append(values[key] or "")


def parse(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text())
    return links


def cluster_of(lib: Library, person: str) -> int:
    site = pages.collect(lib)
    return next(c.cluster_id for c in site.clusters if c.faces[0].face_id.startswith(f"f{person}"))


def test_every_link_and_image_resolves_to_a_file(library):
    index = report.write_report(library)
    site = index.parent
    pages = sorted(site.glob("*.html"))
    assert {p.name for p in pages} >= {"index.html", "unclustered.html", "ignored.html"}
    for page in pages:
        for target in parse(page).targets:
            if target.startswith("file://"):
                assert Path(unquote(target[len("file://"):])).exists(), (page.name, target)
            else:
                assert (site / unquote(target)).exists(), (page.name, target)


def test_every_face_of_a_cluster_is_on_its_page_with_its_command(library):
    index = report.write_report(library)
    ann = cluster_of(library, "ann")
    page = (index.parent / f"cluster-{ann}.html").read_text()
    face_ids = re.findall(r"facebatch label face (\w+) NAME", page)
    assert sorted(face_ids) == [f"fanna{k:03d}" for k in range(PEOPLE["ann"])]
    assert f"facebatch label cluster {ann} NAME" in index.read_text()
    assert "12 faces in 12 photos" in page


def test_names_show_and_person_pages_exist(library):
    ann = cluster_of(library, "ann")
    label_cluster(library, ann, "Ann Žáková")
    index = report.write_report(library)
    text = index.read_text()
    assert '<span class=person>Ann Žáková</span>' in text
    person_page = index.parent / f"person-{pages.person_slug('Ann Žáková')}.html"
    assert person_page.name.startswith("person-ann-zakova-")
    assert len(re.findall(r"<figure class=face ", person_page.read_text())) == PEOPLE["ann"]
    assert f"facebatch label cluster {ann} &#39;Ann Žáková&#39;" in text


def test_large_clusters_and_indexes_are_paginated(library, monkeypatch):
    monkeypatch.setattr(pages, "FACES_PER_PAGE", 5)
    monkeypatch.setattr(pages, "CLUSTERS_PER_INDEX_PAGE", 2)
    index = report.write_report(library)
    ann = cluster_of(library, "ann")
    files = [index.parent / name for name in (f"cluster-{ann}.html", f"cluster-{ann}-2.html", f"cluster-{ann}-3.html")]
    assert all(p.exists() for p in files) and not (index.parent / f"cluster-{ann}-4.html").exists()
    counts = [len(re.findall(r"<figure class=face ", p.read_text())) for p in files]
    assert counts == [5, 5, 2]
    assert f'href="cluster-{ann}-3.html"' in files[0].read_text()
    assert (index.parent / "index-2.html").exists()
    for page in index.parent.glob("*.html"):
        assert len(parse(page).images) <= max(5, 2 * pages.STRIP_FACES)


def test_thumbnails_are_made_once_and_a_vanished_photo_gets_a_placeholder(library, tmp_path):
    report.write_report(library)
    first = {p: p.stat().st_mtime_ns for p in (library.root / "thumbnails").rglob("*.jpg")}
    assert len(first) == sum(PEOPLE.values())
    with Image.open(next(iter(first))) as thumb:
        assert thumb.size == (THUMBNAIL_SIZE, THUMBNAIL_SIZE)

    add_people(library, tmp_path / "photos", {"dan": 3}, "b")
    shutil.rmtree(tmp_path / "photos" / "b")  # new faces whose photos vanished before the report
    cluster_library(library, GroupingSettings())
    made = []
    index = report.write_report(library, progress=lambda done, total: made.append((done, total)))
    assert made[-1] == (3, 3)  # only the new faces
    assert {p: p.stat().st_mtime_ns for p in first} == first
    assert not thumbnail_path(library, "fdanb000").exists()
    images = [src for page in index.parent.glob("*.html") for src in parse(page).images]
    assert any(src.endswith(MISSING_NAME) for src in images)


def test_report_and_contact_sheet_commands(library, tmp_path):
    result = run("--library", library.root, "report", "--out", tmp_path / "site")
    assert result.exit_code == 0 and result.output == f"{tmp_path / 'site' / 'index.html'}\n"
    ann = cluster_of(library, "ann")
    sheet = tmp_path / "ann.png"
    result = run("--library", library.root, "show", "cluster", ann, "-o", sheet)
    assert result.exit_code == 0 and result.output == f"{sheet}\n"
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.width == 8 * sheets.SHEET_CELL
    default = run("--library", library.root, "show", "cluster", ann)  # no -o: a file in the library
    assert default.exit_code == 0 and default.output == f"{library.root / 'sheets' / f'cluster-{ann}.jpg'}\n"
    assert (library.root / "sheets" / f"cluster-{ann}.jpg").is_file()
    for args, message in [
        (["show", "cluster", "99", "-o", "x.jpg"], "Error: no cluster 99: `facebatch clusters` lists them\n"),
        (["show", "person", "Zed", "-o", "x.jpg"],
         "Error: nobody is named 'Zed' (people: none yet); `facebatch people` lists them\n"),
        (["show", "cluster", str(ann), "-o", "x.gif"], "Error: contact sheet must be .jpg, .jpeg or .png, got x.gif\n"),
    ]:
        result = run("--library", library.root, *args)
        assert (result.exit_code, result.output) == (1, message)


def test_a_report_of_an_empty_library_is_one_line(tmp_path):
    result = run("--library", tmp_path / "none", "report")
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1


def test_a_real_browser_loads_every_thumbnail(library):
    """Headless Chromium opens the index and a cluster page from disk: images load, no console errors."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    index = report.write_report(library)
    artifacts = PROJECT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            for name, width in (("index.html", 1200), (f"cluster-{cluster_of(library, 'ann')}.html", 390)):
                page = browser.new_page(viewport={"width": width, "height": 900})
                errors: list[str] = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto((index.parent / name).as_uri())
                page.wait_for_load_state("load")
                page.evaluate("() => Promise.all([...document.images].map(i => i.decode().catch(() => null)))")
                widths = page.evaluate("() => [...document.images].map(i => i.naturalWidth)")
                assert widths and all(w > 0 for w in widths), (name, widths)
                assert errors == []
                page.screenshot(path=str(artifacts / f"report-{name.replace('.html', '')}.png"), full_page=True)
        finally:
            browser.close()


def test_report_out_must_be_a_folder(library, tmp_path):
    (tmp_path / "file.txt").write_text("mine")
    result = run("--library", library.root, "report", "--out", tmp_path / "file.txt")
    assert (result.exit_code, result.output) == (1, f"Error: {tmp_path / 'file.txt'} is not a folder: --out names the "
                                                    "folder the site is written into\n")
    assert (tmp_path / "file.txt").read_text() == "mine"


def test_the_people_page_lists_the_files_the_scan_could_not_read(library, tmp_path):
    from datetime import datetime, timezone

    import pyarrow as pa

    from facebatch.schema import FACES_SCHEMA, PHOTOS_SCHEMA

    broken = {"photo_id": None, "path": str(tmp_path / "photos" / "broken.jpg"), "size_bytes": 5, "mtime": 1,
              "width": None, "height": None, "n_faces": 0, "status": "error", "error_kind": "truncated",
              "error": "image is cut short", "scanned_at": datetime.now(timezone.utc)}
    library.write_shard(pa.Table.from_pylist([broken], PHOTOS_SCHEMA), FACES_SCHEMA.empty_table(), {}, "t")
    index = report.write_report(library, tmp_path / "site")
    html = index.read_text()
    assert "1 photo could not be read" in html and f"<code>{broken['path']}</code>: truncated, image is cut short" in html
