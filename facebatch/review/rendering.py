"""The review pages as Jinja2 templates (package data, autoescaped), rendered for two places:

- `StaticUrls`: the `facebatch report` site, files that open from disk (relative links, no
  script, commands to copy instead of buttons);
- `ServerUrls`: `facebatch review`, a local server whose forms change the library.

The templates are the same; `editable` says whether forms are shown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape

from facebatch.review.pages import STRIP_FACES, Face, counts, percent, person_slug
from facebatch.wording import counted


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=PackageLoader("facebatch.review", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["shq"] = _shell_quote
    env.filters["counted"] = counted  # {{ n | counted("face") }}: "1 face", "2 faces"
    env.globals.update(counts=counts, percent=percent, STRIP_FACES=STRIP_FACES)
    return env


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def paged(stem: str, number: int) -> str:
    return f"{stem}.html" if number == 1 else f"{stem}-{number}.html"


@dataclass
class StaticUrls:
    """Links between files of one folder; thumbnails from the library's cache, by relative path."""

    site: Path  # the site folder
    thumbnails: dict[str, Path]  # face_id -> its thumbnail (or the placeholder of a vanished photo)

    editable = False

    def index(self, page: int = 1) -> str:
        return paged("index", page)

    def cluster(self, cluster_id: int, page: int = 1) -> str:
        return paged(f"cluster-{cluster_id}", page)

    def person(self, name: str, page: int = 1) -> str:
        return paged(f"person-{person_slug(name)}", page)

    def unclustered(self, page: int = 1) -> str:
        return paged("unclustered", page)

    def ignored(self) -> str:
        return "ignored.html"

    def thumb(self, face: Face) -> str:
        return quote(os.path.relpath(self.thumbnails[face.face_id], self.site).replace(os.sep, "/"))

    def photo(self, face: Face) -> str:
        return "file://" + quote(face.path)

    def static(self, name: str) -> str:
        return name


@dataclass
class ServerUrls:
    """Routes of the review server (people.review.server)."""

    editable = True

    def index(self, page: int = 1) -> str:
        return "/" if page == 1 else f"/?page={page}"

    def cluster(self, cluster_id: int, page: int = 1) -> str:
        return f"/cluster/{cluster_id}" + ("" if page == 1 else f"?page={page}")

    def person(self, name: str, page: int = 1) -> str:
        return f"/person/{quote(name, safe='')}" + ("" if page == 1 else f"?page={page}")

    def unclustered(self, page: int = 1) -> str:
        return "/unclustered" + ("" if page == 1 else f"?page={page}")

    def ignored(self) -> str:
        return "/ignored"

    def thumb(self, face: Face) -> str:
        return f"/thumb/{face.face_id}.jpg"

    def photo(self, face: Face) -> str:
        return f"/photo/{face.photo_id}"

    def static(self, name: str) -> str:
        return f"/static/{name}"
