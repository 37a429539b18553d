"""`facebatch review`: the review pages served on this machine, with forms that change the library.

Every action is a plain HTML form (POST, the server's token in a hidden field) that calls the
same people.actions function as the CLI, so the CLI, the site and the export always agree; a
little script (static/review.js) adds selection and keys, nothing needs it.

Safe by default:
- binds 127.0.0.1 (another --host is allowed, with a warning), and only answers requests whose
  Host header names the address it listens on (no DNS rebinding);
- every POST must carry the per-server token (CSRF): without it, 403 and nothing written;
- no path from a request reaches the file system: thumbnails and photos are found by the face or
  photo id the library's tables name, static files from a fixed list;
- writes take the library lock, waiting up to `wait` seconds for a scan or another command; a
  review during a long scan says so and writes nothing, never half.
"""

from __future__ import annotations

import errno
import io
import math
import secrets
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from facebatch.errors import FacebatchError, InputError, LibraryBusy, PhotoError, UsageError
from facebatch.imageload import DecodedPhoto, decode_photo, read_photo_bytes
from facebatch.people import actions
from facebatch.people.stored_adapter import METADATA_FILE
from facebatch.review import pages
from facebatch.review.pages import Scanned, Site, chunks, collect
from facebatch.review.report import common
from facebatch.review.rendering import ServerUrls, render
from facebatch.review.thumbnails import make_thumbnails
from facebatch.store import Library
from facebatch.videoload import frame_at
from facebatch.wording import counted

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
WAIT_FOR_LOCK = 10.0  # seconds a click waits for a scan or another command before saying so
PHOTO_LONG_SIDE = 1600  # the photo page's image: big enough for a screen, small enough to send
STATIC = {"review.css": "text/css", "review.js": "text/javascript"}


@dataclass
class Review:
    """The server's state: the library, its token, and the page model of the library as it is."""

    library: Library
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    wait: float = WAIT_FOR_LOCK
    _site: Site | None = None
    _version: tuple = ()
    _scanned: Scanned | None = None
    _scan_version: tuple = ()
    last_action: str | None = None  # the undo line's action, read with the labels by site()
    # Pages are answered in worker threads (Starlette runs plain `def` endpoints there): one makes
    # the page model, the others wait for it rather than make it again.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def site(self) -> Site:
        """The page model, made again only when a table changed: after a click only the labels
        and clusters are read again; the faces and photos only after a scan."""
        with self._lock:
            return self._current_site()

    def _current_site(self) -> Site:
        lib = self.library
        # The adapter's file too: `train` and `train --off` change the space suggestions are made in.
        scan_version = _stamps(lib.shards_dir, lib.faces_dir, lib.photos_dir, lib.adapter_dir / METADATA_FILE)
        if self._scanned is None or scan_version != self._scan_version:
            self._scanned, self._scan_version, self._site = Scanned.read(lib), scan_version, None
        version = _stamps(lib.labels_path, lib.clusters_path, lib.cluster_state_path, lib.cluster_pairs_path)
        if self._site is None or version != self._version:
            self._site, self._version = collect(lib, scanned=self._scanned), version
            latest = actions.history(lib, 1)
            self.last_action = latest[0].text() if latest else None
        return self._site


def _stamps(*paths: Path) -> tuple:
    """What changes when a file (or a folder's list of files) is written again."""
    stamps = []
    for path in paths:
        try:
            stat = path.stat()
            stamps.append((stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            stamps.append(None)
    return tuple(stamps)


def create_app(review: Review, hosts: list[str] | None = None) -> Starlette:
    url = ServerUrls()

    def page(request: Request, template: str, title: str, **context: Any) -> HTMLResponse:
        message = request.query_params.get("msg")
        site = review.site()
        return HTMLResponse(render(template, **common(
            site, url, title, token=review.token, here=here_of(request),
            message=message, message_kind=request.query_params.get("kind", ""),
            last_action=review.last_action, **context)))

    def number(request: Request) -> int:
        try:
            return max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            return 1

    def paged(request: Request, items: list[Any], per_page: int) -> tuple[list[Any], int, int]:
        """The asked page of items (the last one, past the end), its number and the page count."""
        parts = chunks(items, per_page)
        n = min(number(request), len(parts))
        return parts[n - 1], n, len(parts)

    def people_page(request: Request) -> Response:
        site = review.site()
        clusters, n, count = paged(request, site.clusters, pages.CLUSTERS_PER_INDEX_PAGE)
        return page(request, "people.html", "People in the library", clusters=clusters, number=n, pages=count)

    def cluster_page(request: Request) -> Response:
        cluster = review.site().cluster(request.path_params["cluster_id"])
        if cluster is None:
            return not_found(f"no cluster {request.path_params['cluster_id']}")
        faces, n, count = paged(request, cluster.faces, pages.FACES_PER_PAGE)
        return page(request, "cluster.html", cluster.title, cluster=cluster, faces=faces, number=n,
                    pages=count, page_url=lambda k: url.cluster(cluster.cluster_id, k))

    def person_page(request: Request) -> Response:
        name = unquote(request.path_params["name"])
        faces = review.site().people.get(name)
        if faces is None:
            return not_found(f"nobody is named {name}")
        chunk, n, count = paged(request, faces, pages.FACES_PER_PAGE)
        return page(request, "person.html", name, name=name, faces=faces, number=n, pages=count,
                    confirmed=[f for f in chunk if f.status == "confirmed"],
                    suggested=[f for f in chunk if f.status != "confirmed"], page_url=lambda k: url.person(name, k))

    def unclustered_page(request: Request) -> Response:
        faces = review.site().unclustered
        chunk, n, count = paged(request, faces, pages.FACES_PER_PAGE)
        return page(request, "faces.html", "Faces in no cluster", heading="Faces in no cluster", all_faces=faces,
                    faces=chunk, number=n, pages=count, page_url=url.unclustered)

    def queue_page(request: Request) -> Response:
        """One face at a time, least sure first: "Is this NAME?" (yes, not NAME, skip, undo)."""
        queue = review.site().queue
        try:
            skip = max(0, int(request.query_params.get("skip", "0")))
        except ValueError:
            skip = 0
        skip = min(skip, len(queue))
        question = queue[skip] if skip < len(queue) else None
        photo = review.site().photos.get(question.face.photo_id) if question else None
        return page(request, "queue.html", f"Is this {question.name}?" if question else "Nothing waits for a look",
                    question=question, photo=photo, skip=skip, waiting=len(queue))

    def ignored_page(request: Request) -> Response:
        return page(request, "ignored.html", "Ignored clusters")

    def photo_page(request: Request) -> Response:
        photo = review.site().photos.get(request.path_params["photo_id"])
        if photo is None:
            return not_found("no such photo in the library")
        return page(request, "photo.html", photo.path.rsplit("/", 1)[-1], photo=photo)

    def original(request: Request) -> Response:
        """The photo, EXIF orientation applied (the boxes are in that frame), as a JPEG."""
        photo = review.site().photos.get(request.path_params["photo_id"])
        if photo is None:
            return not_found("no such photo in the library")
        try:
            time = float(request.query_params["t"]) if "t" in request.query_params else None
        except ValueError:
            time = math.nan
        if time is not None and not (math.isfinite(time) and time >= 0):
            return not_found("t must be a time in seconds")
        try:
            if time is not None:  # a video: the frame a face was found in
                frame = frame_at(photo.path, time)
                decoded = DecodedPhoto(frame, frame.width, frame.height)
            else:
                decoded = decode_photo(read_photo_bytes(photo.path), min_long_side=PHOTO_LONG_SIDE)
        except PhotoError as error:
            return not_found(f"the photo can't be read now: {error.message}")
        image = decoded.image
        image.thumbnail((PHOTO_LONG_SIDE, PHOTO_LONG_SIDE), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=88)
        return Response(buffer.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=600"})

    def thumbnail(request: Request) -> Response:
        face = review.site().by_id.get(request.path_params["face_id"])
        if face is None:
            return not_found("no such face in the library")
        path = make_thumbnails(review.library, [face.source])[face.face_id]
        return FileResponse(path, headers={"Cache-Control": "private, max-age=86400"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return not_found("no such file")
        return FileResponse(Path(__file__).parent / "static" / name, media_type=STATIC[name])

    # ----------------------------------------------------------------------- actions

    async def form_of(request: Request) -> Any:
        form = await request.form()
        if not secrets.compare_digest(str(form.get("token", "")), review.token):
            raise PermissionError
        return form

    def done(form: Any, message: str, kind: str = "done") -> Response:
        back = str(form.get("back") or "/")
        parts = urlsplit(back)
        if parts.scheme or parts.netloc or not back.startswith("/"):
            back = "/"  # only this site's own pages
        joiner = "&" if "?" in back else "?"
        return RedirectResponse(f"{back}{joiner}msg={quote(message)}&kind={kind}", status_code=303)

    def acting(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                form = await form_of(request)
            except PermissionError:
                return Response("Forbidden: this form is not from this review server (no or wrong token)\n",
                                status_code=403, media_type="text/plain")
            try:
                # In a worker thread: an action waiting for the library's lock (a scan, up to
                # `wait` seconds) never holds up the event loop, so every page still answers.
                return done(form, await run_in_threadpool(handler, request, form))
            except LibraryBusy as error:
                return done(form, f"nothing changed: {error}", "error")
            except FacebatchError as error:
                return done(form, str(error), "error")
        return endpoint

    def faces_in(form: Any) -> list[str]:
        return [str(f) for f in form.getlist("face")]

    def name_cluster(request: Request, form: Any) -> str:
        result = actions.label_cluster(review.library, request.path_params["cluster_id"], str(form.get("name", "")),
                                       review.wait)
        waiting = f"; {counted(result.waiting, 'face')} at its edge wait for a look in the Queue" if result.waiting else ""
        return f"cluster {result.cluster_id} is {result.name}: {counted(result.faces, 'face')}{waiting}"

    def ignore(request: Request, form: Any) -> str:
        result = actions.ignore_cluster(review.library, request.path_params["cluster_id"], wait=review.wait)
        return f"cluster {result.cluster_id} ignored"

    def unignore(request: Request, form: Any) -> str:
        actions.ignore_cluster(review.library, request.path_params["cluster_id"], undo=True, wait=review.wait)
        return f"cluster {request.path_params['cluster_id']} is no longer ignored"

    def merge(request: Request, form: Any) -> str:
        ids = [int(c) for c in form.getlist("cluster")]
        result = actions.merge_clusters(review.library, ids, review.wait)
        return f"clusters {', '.join(map(str, result.clusters))} are now cluster {result.cluster_id}"

    def on_faces(request: Request, form: Any) -> str:
        chosen = faces_in(form)
        if not chosen:
            raise UsageError("select faces first (click them, or shift-click a range)")
        what = form.get("action")
        if what == "name":
            result = actions.label_faces(review.library, chosen, str(form.get("name", "")), review.wait)
            return f"{counted(result.faces, 'face')} {'is' if result.faces == 1 else 'are'} {result.name}"
        if what == "not":
            result = actions.reject_faces(review.library, chosen, str(form.get("person", "")), review.wait)
            return f"{counted(result.faces, 'face')} {'is' if result.faces == 1 else 'are'} not {result.name}"
        if what == "split":
            result = actions.split_faces(review.library, chosen, review.wait)
            return f"{counted(result.faces, 'face')} split off into cluster {result.cluster_id}"
        raise UsageError(f"unknown action {what!r}")

    def accept(request: Request, form: Any) -> str:
        result = actions.label_faces(review.library, faces_in(form), str(form.get("name", "")), review.wait)
        return f"{counted(result.faces, 'suggestion')} accepted as {result.name}"

    def undo(request: Request, form: Any) -> str:
        result = actions.undo(review.library, review.wait)
        return f"undid {result.undone.text()}"

    routes = [
        Route("/", people_page),
        Route("/cluster/{cluster_id:int}", cluster_page),
        Route("/person/{name:path}", person_page),
        Route("/unclustered", unclustered_page),
        Route("/ignored", ignored_page),
        Route("/queue", queue_page),
        Route("/photo/{photo_id}", photo_page),
        Route("/original/{photo_id}", original),
        Route("/thumb/{face_id}.jpg", thumbnail),
        Route("/static/{name}", static),
        Route("/cluster/{cluster_id:int}/name", acting(name_cluster), methods=["POST"]),
        Route("/cluster/{cluster_id:int}/ignore", acting(ignore), methods=["POST"]),
        Route("/cluster/{cluster_id:int}/unignore", acting(unignore), methods=["POST"]),
        Route("/merge", acting(merge), methods=["POST"]),
        Route("/faces", acting(on_faces), methods=["POST"]),
        Route("/person/accept", acting(accept), methods=["POST"]),
        Route("/undo", acting(undo), methods=["POST"]),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=hosts)] if hosts else []
    return Starlette(routes=routes, middleware=middleware)


def here_of(request: Request) -> str:
    """The page to come back to after an action: its path, and which page or queue place it showed."""
    kept = {key: request.query_params[key] for key in ("page", "skip") if key in request.query_params}
    return request.url.path + (f"?{urlencode(kept)}" if kept else "")


def not_found(message: str) -> Response:
    return Response(f"Not found: {message}\n", status_code=404, media_type="text/plain")


def allowed_hosts(host: str) -> list[str] | None:
    """Host headers the server answers: its own address (and localhost's names on loopback)."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return ["127.0.0.1", "localhost", "[::1]"]
    if host in ("0.0.0.0", "::"):
        return None  # every interface: the user asked for the network
    return [f"[{host}]" if ":" in host else host]  # an IPv6 address comes bracketed in the Host header


def prepare(library: Library) -> Review:
    """Check the library can be reviewed (scanned, clustered) before the server starts."""
    library.require_faces()
    library.require_clusters()
    review = Review(library)
    review.site()
    return review


def listen(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> socket.socket:
    """The server's socket, bound before anything else is done: a port in use is one line of ours
    (exit 2), not uvicorn's log and exit, and no other program can take it in between."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    # `localhost` may name ::1 first; the address printed and the browser's are 127.0.0.1.
    family, kind, proto, _, address = min(found, key=lambda info: info[0] != socket.AF_INET)
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart right after a stop may reuse the port
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InputError(f"port {port} on {host} is in use (another `facebatch review`, or another program?); "
                             "--port N picks another") from None
        raise InputError(f"cannot listen on {host} port {port}: {exc.strerror}") from None
    return sock


def serve(review: Review, sock: socket.socket, host: str = DEFAULT_HOST) -> None:  # pragma: no cover - blocks
    """Answer on `sock` (from `listen`), to requests naming `host` as the user gave it."""
    import uvicorn

    config = uvicorn.Config(create_app(review, allowed_hosts(host)), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])
