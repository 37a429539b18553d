"""The review site: every cluster as faces, with the command that names it. Static files, no server.

Pages (all in one folder, relative links, one stylesheet, no script, no network):
  index.html, index-2.html ...      clusters by size: person or "unnamed", counts, a strip of faces
  cluster-12.html, cluster-12-2.html  every face of cluster 12 with its face_id and photo
  person-<slug>.html                every face named or suggested as that person
  unclustered.html                  faces in no cluster
  ignored.html                      ignored clusters, apart
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import shlex
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from PIL import Image, ImageDraw, ImageFont

from facebatch.errors import InputError, LibraryMissing, NotFound, UsageError
from facebatch.people.calibration import confidence
from facebatch.people.suggestions import face_tags
from facebatch.people.view import build_view
from facebatch.files import STDOUT, atomic_write_bytes, describe_output, output_file, resolve_output
from facebatch.store import Library
from facebatch.review.thumbnails import FaceBox, make_thumbnails

FACES_PER_PAGE = 200
CLUSTERS_PER_INDEX_PAGE = 30
STRIP_FACES = 8  # so an index page holds at most 30 x 8 = 240 thumbnails


@dataclass
class Face:
    source: FaceBox  # where its thumbnail is cropped from
    cluster_id: int
    person: str | None
    status: str  # confirmed, suggested, unknown
    confidence: float
    fit: float  # distance to the centre of its cluster's other faces (nan: not in a cluster)
    thumbnail: str = ""  # URL relative to the site folder

    @property
    def face_id(self) -> str:
        return self.source.face_id

    @property
    def path(self) -> str:
        return self.source.path


@dataclass
class Cluster:
    cluster_id: int
    person: str | None
    ignored: bool
    conflict: str | None
    faces: list[Face] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"Cluster {self.cluster_id}"


@dataclass
class Site:
    library: Library
    clusters: list[Cluster]  # not ignored, largest first
    ignored: list[Cluster]
    unclustered: list[Face]
    people: dict[str, list[Face]]  # name -> confirmed and suggested faces, most confident first


def collect(library: Library) -> Site:
    """Faces, clusters and names from the tables: nothing here opens a photo."""
    view = build_view(library)
    tags = face_tags(library, view=view)
    boxes = _face_boxes(library)
    fit = dict(zip(view.face_ids.tolist(), view.distance.tolist()))
    clusters = {
        c: Cluster(c, info.person, info.ignored, info.conflict_line() if info.conflict else None)
        for c, info in view.clusters.items()
    }
    unclustered: list[Face] = []
    people: dict[str, list[Face]] = {}
    for i, face_id in enumerate(tags.face_ids):
        face = Face(boxes[face_id], int(tags.cluster_ids[i]), tags.person[i], tags.status[i],
                    float(tags.confidence[i]), float(fit.get(face_id, float("nan"))))
        cluster = clusters.get(face.cluster_id)
        (cluster.faces if cluster else unclustered).append(face)
        if face.person:
            people.setdefault(face.person, []).append(face)
    for cluster in clusters.values():
        cluster.faces.sort(key=lambda f: (f.status != "confirmed", _fit_key(f.fit), f.face_id))
    for named in people.values():
        named.sort(key=lambda f: (f.status != "confirmed", -f.confidence, f.face_id))
    ordered = sorted((c for c in clusters.values() if c.faces), key=lambda c: (-len(c.faces), c.cluster_id))
    return Site(
        library,
        [c for c in ordered if not c.ignored],
        [c for c in ordered if c.ignored],
        unclustered,
        dict(sorted(people.items(), key=lambda kv: (-len(kv[1]), kv[0]))),
    )


def _fit_key(distance: float) -> float:
    return distance if distance == distance else 9.0  # nan (alone) last


def write_report(
    library: Library, out: Path | None = None, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Make the thumbnails still missing, write every page, drop pages left from an older report."""
    if not library.exists():
        raise LibraryMissing(library.root)
    if not library.read_faces(["face_id"]).num_rows:
        photos = library.read_table("photos", ["status"]).num_rows
        if photos:
            raise InputError(f"library {library.root} has {photos} photos and no face was found in them: "
                             "nothing to show")
        raise LibraryMissing(library.root, f"library {library.root} has no photos yet: run `facebatch scan FOLDER` first")
    site = collect(library)
    out = (out or library.root / "report").absolute()
    _attach_thumbnails(site, out, progress)
    pages = render_site(site)
    for name, text in pages.items():
        atomic_write_bytes(out / name, text.encode())
    for stale in set(os.listdir(out)) - set(pages):
        if stale.endswith(".html"):
            (out / stale).unlink()
    return out / "index.html"


def _attach_thumbnails(site: Site, out: Path, progress: Callable[[int, int], None] | None) -> None:
    every = [f for c in [*site.clusters, *site.ignored] for f in c.faces] + site.unclustered
    made = make_thumbnails(site.library, [f.source for f in every], progress)
    for face in every:
        face.thumbnail = quote(os.path.relpath(made[face.face_id], out).replace(os.sep, "/"))


# --------------------------------------------------------------------------- pages


def render_site(site: Site) -> dict[str, str]:
    """File name -> HTML for every page of the site."""
    pages: dict[str, str] = {"style.css": STYLE}
    index_pages = _chunks(site.clusters, CLUSTERS_PER_INDEX_PAGE) or [[]]
    for number, clusters in enumerate(index_pages, 1):
        body = _index_header(site) + "".join(_cluster_card(c) for c in clusters)
        pages[_paged("index", number)] = _page("People in the library", body, _pager("index", number, len(index_pages)))
    for cluster in [*site.clusters, *site.ignored]:
        pages.update(_face_pages(f"cluster-{cluster.cluster_id}", _cluster_heading(cluster), cluster.faces,
                                 cluster.title))
    pages.update(_face_pages("unclustered", "<h1>Faces in no cluster</h1>", site.unclustered, "Unclustered"))
    for name, faces in site.people.items():
        heading = f"<h1 class=person>{html.escape(name)}</h1><p>{_counts(faces)}</p>"
        pages.update(_face_pages(person_page(name), heading, faces, name))
    ignored = "<h1>Ignored clusters</h1><p>Never suggested, never exported as a person.</p>"
    pages["ignored.html"] = _page("Ignored clusters", ignored + "".join(_cluster_card(c) for c in site.ignored), "")
    return pages


def person_page(name: str) -> str:
    """A file name for any name: readable ASCII where possible, a hash keeps it unique."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_name).strip("-").lower()[:40]
    return f"person-{slug or 'x'}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"


def _index_header(site: Site) -> str:
    faces = sum(len(c.faces) for c in site.clusters) + len(site.unclustered)
    people = "".join(
        f'<a class=chip href="{person_page(n)}.html">{html.escape(n)} <small>{len(f)}</small></a>'
        for n, f in site.people.items()
    )
    return (
        f"<h1>People in the library</h1><p class=meta>{len(site.clusters)} clusters, {faces} faces · "
        f'<a href="unclustered.html">{len(site.unclustered)} faces in no cluster</a> · '
        f'<a href="ignored.html">{len(site.ignored)} ignored clusters</a></p>'
        + (f"<nav class=people>{people}</nav>" if people else "")
    )


def _cluster_card(cluster: Cluster) -> str:
    page = f"cluster-{cluster.cluster_id}.html"
    strip = "".join(_thumb(f, size="strip") for f in cluster.faces[:STRIP_FACES])
    return (
        f"<section class=card>{_cluster_heading(cluster, link=page)}"
        f'<a class=strip href="{page}">{strip}</a></section>'
    )


def _cluster_heading(cluster: Cluster, link: str | None = None) -> str:
    name = (f'<span class=person>{html.escape(cluster.person)}</span>' if cluster.person
            else '<span class=unnamed>unnamed</span>')
    title = f'<a href="{link}">{cluster.title}</a>' if link else cluster.title
    command = (f"facebatch ignore cluster {cluster.cluster_id} --undo" if cluster.ignored else
               f"facebatch label cluster {cluster.cluster_id} {'NAME' if not cluster.person else shlex.quote(cluster.person)}")
    conflict = f"<p class=conflict>{html.escape(cluster.conflict)}</p>" if cluster.conflict else ""
    return (
        f"<h2>{name} <small>{title}</small></h2><p class=meta>{_counts(cluster.faces)}</p>"
        f"<p class=command><code>{html.escape(command)}</code></p>{conflict}"
    )


def _face_pages(stem: str, heading: str, faces: Sequence[Face], title: str) -> dict[str, str]:
    chunks = _chunks(list(faces), FACES_PER_PAGE) or [[]]
    return {
        _paged(stem, number): _page(
            title,
            f'<p><a href="index.html">&larr; all clusters</a></p>{heading}'
            f"<div class=grid>{''.join(_face_card(f) for f in chunk)}</div>",
            _pager(stem, number, len(chunks)),
        )
        for number, chunk in enumerate(chunks, 1)
    }


def _face_card(face: Face) -> str:
    who = html.escape(face.person) if face.person else "unnamed"
    status = {"confirmed": "confirmed", "suggested": f"suggested {face.confidence:.0%}"}.get(
        face.status, f"fits {float(confidence(face.fit)):.0%}" if face.cluster_id != -1 and face.fit == face.fit else "")
    shown_path = "/".join(Path(face.path).parts[-2:])
    return (
        f"<figure class=face>{_thumb(face)}<figcaption><b>{who}</b> <small>{status}</small><br>"
        f'<a class=path href="file://{quote(face.path)}" title="{html.escape(face.path)}">'
        f"{html.escape(shown_path)}</a><br>"
        f"<code>facebatch label face {face.face_id} NAME</code></figcaption></figure>"
    )


def _thumb(face: Face, size: str = "face") -> str:
    alt = html.escape(face.person or "unknown face")
    return f'<img class={size} src="{face.thumbnail}" alt="{alt}" width=200 height=200>'


def _counts(faces: Sequence[Face]) -> str:
    return f"{len(faces)} faces in {len({f.path for f in faces})} photos"


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _paged(stem: str, number: int) -> str:
    return f"{stem}.html" if number == 1 else f"{stem}-{number}.html"


def _pager(stem: str, number: int, pages: int) -> str:
    if pages == 1:
        return ""
    links = " ".join(
        f"<b>{n}</b>" if n == number else f'<a href="{_paged(stem, n)}">{n}</a>' for n in range(1, pages + 1)
    )
    return f"<nav class=pager>Page {links}</nav>"


def _page(title: str, body: str, pager: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f'<title>{html.escape(title)} · facebatch</title><link rel=stylesheet href="style.css"></head>'
        f"<body><main>{pager}{body}{pager}</main></body></html>\n"
    )


STYLE = """\
:root { color-scheme: light; --ink: #1d1d1f; --muted: #6e6e73; --card: #fff; --bg: #f2f2f0; --accent: #0a58ca; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       background: var(--bg); }
main { max-width: 1200px; margin: 0 auto; padding: 12px; }
a { color: var(--accent); }
h1 { font-size: 1.6rem; margin: .4em 0; }
h2 { font-size: 1.3rem; margin: 0 0 .2em; }
h2 small, h1 small { color: var(--muted); font-weight: normal; font-size: .8em; }
.person { font-weight: 700; }
.unnamed { color: var(--muted); font-style: italic; }
.meta { color: var(--muted); margin: .2em 0; }
.card { background: var(--card); border-radius: 12px; padding: 12px; margin: 12px 0;
        box-shadow: 0 1px 3px rgba(0,0,0,.12); }
.strip { display: flex; gap: 6px; overflow-x: auto; padding-top: 6px; }
.strip img { width: 112px; height: 112px; flex: none; border-radius: 8px; object-fit: cover; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
.face { margin: 0; background: var(--card); border-radius: 10px; padding: 6px; overflow-wrap: anywhere;
        font-size: .85rem; }
.face img { width: 100%; height: auto; aspect-ratio: 1; border-radius: 8px; display: block; }
code { background: #e8e8e6; border-radius: 4px; padding: 1px 4px; font-size: .8rem; user-select: all; }
.command code { font-size: .9rem; }
.conflict { background: #fff3cd; border-radius: 6px; padding: 6px; }
.people { display: flex; flex-wrap: wrap; gap: 6px; margin: 8px 0; }
.chip { background: var(--card); border-radius: 999px; padding: 4px 10px; text-decoration: none; font-weight: 600; }
.chip small { color: var(--muted); font-weight: normal; }
.pager { margin: 10px 0; }
.pager a, .pager b { display: inline-block; min-width: 2em; text-align: center; }
@media (max-width: 520px) { .grid { grid-template-columns: repeat(2, 1fr); } h1 { font-size: 1.3rem; } }
"""


# --------------------------------------------------------------------------- contact sheets

SHEET_CELL = 160
SHEET_COLUMNS = 8
SHEET_MAX_FACES = 400


def faces_of_cluster(site: Site, cluster_id: int) -> list[Face]:
    for cluster in [*site.clusters, *site.ignored]:
        if cluster.cluster_id == cluster_id:
            return cluster.faces
    raise NotFound(f"no cluster {cluster_id}: `facebatch clusters` lists them")


def faces_of_person(site: Site, name: str) -> list[Face]:
    if name not in site.people:
        known = ", ".join(list(site.people)[:5]) or "none yet"
        raise NotFound(f"nobody is named {name!r} (people: {known}); `facebatch people` lists them")
    return site.people[name]


def write_contact_sheet(library: Library, faces: Sequence[Face], title: str, out: str) -> str:
    """A grid of the faces' thumbnails under a title line; JPEG or PNG by the file's extension
    (PNG for "-", standard output). Returns where it went."""
    kind = "PNG" if out == STDOUT else {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(Path(out).suffix.lower())
    if kind is None:
        raise UsageError(f"contact sheet must be .jpg, .jpeg or .png, got {Path(out).name}")
    resolve_output(out)  # a missing folder is reported before any thumbnail is made
    shown = list(faces)[:SHEET_MAX_FACES]
    thumbnails = make_thumbnails(library, [f.source for f in shown])
    columns = max(1, min(SHEET_COLUMNS, len(shown)))
    rows = -(-len(shown) // columns)
    header = 36
    sheet = Image.new("RGB", (columns * SHEET_CELL, header + rows * SHEET_CELL), (255, 255, 255))
    more = f" (first {len(shown)} of {len(faces)})" if len(faces) > len(shown) else ""
    ImageDraw.Draw(sheet).text((8, 8), f"{title}: {len(faces)} faces{more}", fill=(0, 0, 0),
                               font=ImageFont.load_default(size=20))
    for i, face in enumerate(shown):
        with Image.open(thumbnails[face.face_id]) as thumb:
            cell = thumb.convert("RGB").resize((SHEET_CELL, SHEET_CELL))
        sheet.paste(cell, ((i % columns) * SHEET_CELL, header + (i // columns) * SHEET_CELL))
    with output_file(out, binary=True) as f:
        sheet.save(f, kind, **({"quality": 90} if kind == "JPEG" else {}))
    return describe_output(out if out == STDOUT else Path(out).absolute())


def _face_boxes(library: Library) -> dict[str, FaceBox]:
    """face_id -> its box and photo, read once for the whole report."""
    photos = library.read_photos()
    long_side = {p: max(w or 0, h or 0) for p, w, h in zip(
        photos["path"].to_pylist(), photos["width"].to_pylist(), photos["height"].to_pylist())}
    faces = library.read_faces(["face_id", "path", "box"])
    return {
        f: FaceBox(f, p, tuple(b), long_side.get(p, 0))
        for f, p, b in zip(faces["face_id"].to_pylist(), faces["path"].to_pylist(), faces["box"].to_pylist())
    }
