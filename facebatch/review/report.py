"""`facebatch report`: the review pages as a static site that opens from disk (no server, no
network, no script), rendered from the same templates as `facebatch review`.

Pages (one folder, relative links, one stylesheet):
  index.html, index-2.html ...        clusters by size: person or "unnamed", counts, a strip of faces
  cluster-12.html, cluster-12-2.html  every face of cluster 12, best fit first, with its command
  person-<slug>.html                  every face named or suggested as that person
  unclustered.html, ignored.html      faces in no cluster; ignored clusters, apart
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facebatch.errors import OutputError
from facebatch.files import atomic_write_bytes
from facebatch.review import pages
from facebatch.review.pages import Face, Site, chunks, collect
from facebatch.review.rendering import StaticUrls, render
from facebatch.review.thumbnails import make_thumbnails
from facebatch.store import Library

STATIC_FILES = ("review.css",)


def write_report(
    library: Library, out: Path | None = None, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Make the thumbnails still missing, write every page, drop pages left from an older report."""
    library.require_faces()
    site = collect(library)
    out = (out or library.root / "report").absolute()
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} is not a folder: --out names the folder the site is written into")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot make the site folder {out}: {exc.strerror or exc}") from None
    every = [f for c in [*site.clusters, *site.ignored] for f in c.faces] + site.unclustered
    thumbnails = make_thumbnails(library, [f.source for f in every], progress)
    written = render_site(site, StaticUrls(out, thumbnails))
    for name, text in written.items():
        atomic_write_bytes(out / name, text.encode())
    for name in STATIC_FILES:
        shutil.copyfile(Path(__file__).parent / "static" / name, out / name)
    for stale in set(os.listdir(out)) - set(written):
        if stale.endswith(".html"):
            (out / stale).unlink()
    return out / "index.html"


def render_site(site: Site, url: StaticUrls) -> dict[str, str]:
    """File name -> HTML for every page of the site."""
    out: dict[str, str] = {}
    index_pages = chunks(site.clusters, pages.CLUSTERS_PER_INDEX_PAGE)
    for number, clusters in enumerate(index_pages, 1):
        out[url.index(number)] = render("people.html", **common(site, url, "People in the library"),
                                        clusters=clusters, number=number, pages=len(index_pages))
    for cluster in [*site.clusters, *site.ignored]:
        parts = chunks(cluster.faces, pages.FACES_PER_PAGE)
        for number, faces in enumerate(parts, 1):
            out[url.cluster(cluster.cluster_id, number)] = render(
                "cluster.html", **common(site, url, cluster.title), cluster=cluster, faces=faces, number=number,
                pages=len(parts), page_url=lambda n, c=cluster.cluster_id: url.cluster(c, n))
    out.update(face_pages(site, url, "Faces in no cluster", site.unclustered, url.unclustered))
    for name, faces in site.people.items():
        parts = chunks(faces, pages.FACES_PER_PAGE)
        for number, chunk in enumerate(parts, 1):
            out[url.person(name, number)] = render(
                "person.html", **common(site, url, name), name=name, faces=faces, number=number, pages=len(parts),
                confirmed=[f for f in chunk if f.status == "confirmed"],
                suggested=[f for f in chunk if f.status != "confirmed"],
                page_url=lambda n, p=name: url.person(p, n))
    out[url.ignored()] = render("ignored.html", **common(site, url, "Ignored clusters"))
    return out


def face_pages(site: Site, url: Any, heading: str, faces: list[Face], url_for: Callable[[int], str]) -> dict[str, str]:
    parts = chunks(faces, pages.FACES_PER_PAGE)
    return {
        url_for(number): render("faces.html", **common(site, url, heading), heading=heading, all_faces=faces,
                                faces=chunk, number=number, pages=len(parts), page_url=url_for)
        for number, chunk in enumerate(parts, 1)
    }


def common(site: Site, url: Any, title: str, **extra: Any) -> dict[str, Any]:
    """What every page's template gets."""
    return {"site": site, "url": url, "title": title, "token": "", "here": "", "message": None,
            "message_kind": "", "last_action": None, **extra}
