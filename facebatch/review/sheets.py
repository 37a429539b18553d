"""`facebatch show`: contact sheets, a grid of face thumbnails, to see who a cluster or person is."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from facebatch.errors import NotFound, UsageError
from facebatch.files import STDOUT, describe_output, output_file, resolve_output
from facebatch.review.pages import Face, Site
from facebatch.review.thumbnails import make_thumbnails
from facebatch.store import Library

SHEET_CELL = 160
SHEET_COLUMNS = 8
SHEET_MAX_FACES = 400


def faces_of_cluster(site: Site, cluster_id: int) -> list[Face]:
    cluster = site.cluster(cluster_id)
    if cluster is None:
        raise NotFound(f"no cluster {cluster_id}: `facebatch clusters` lists them")
    return cluster.faces


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
