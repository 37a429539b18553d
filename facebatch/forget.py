"""`facebatch forget`: a person, faces or photos taken out of the library for good.

A face library is biometric data. For each forgotten face this removes:
- its row in the faces table (embedding, box, landmarks), its part rewritten without it;
- every label about it, and every label naming a forgotten person ("not Alice" on other faces
  too), from labels.parquet and from every generation kept of it;
- its row in the clusters table and in the moves clusters.json keeps for undo;
- its thumbnail; the contact sheets and the static report (LIBRARY/sheets, LIBRARY/report: they
  show faces and names; `show` and `report` write them again);
- the adapter, when it learned from a forgotten label;
- the regions facebatch wrote for it, or under a forgotten name, in XMP sidecars, and that name
  where facebatch added it to the people lists (regions other tools wrote stay: not ours).
What stays is a tombstone per face (LIBRARY/forgotten.parquet: face id, photo id, path, box, a
video's span; no embedding, no name), so that no re-scan, not even --force, embeds the face again;
and the photos' rows. `leftovers` is what `facebatch check` runs to prove nothing else of them is left.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facebatch.errors import NotFound
from facebatch.exports.xmp import FolderStems, sidecar_paths, take_back, write_sidecar
from facebatch.exports.xmp_packet import FACEBATCH, XmpError
from facebatch.files import atomic_write_json
from facebatch.people.labels import KIND_NAME, KIND_NOT, clean_name, replay
from facebatch.review.thumbnails import thumbnail_path
from facebatch.scan.discovery import renditions_of_raws
from facebatch.schema import LIVE_STATUSES
from facebatch.store import Library

DERIVED = ("report", "sheets")  # folders of LIBRARY that show faces and names, written again on demand


@dataclass
class ForgetResult:
    faces: int  # faces whose rows were removed (an already forgotten one is not counted again)
    labels: int  # label rows removed from the history
    thumbnails: int
    sidecars: int  # sidecars facebatch's regions were taken out of
    sidecar_errors: list[tuple[str, str]]  # (sidecar, why it was left as it is)
    adapter: bool  # the adapter was removed (it learned from a forgotten label)
    derived: list[str]  # derived folders removed
    set_aside: int = 0  # files in LIBRARY/damaged/ (set aside by `check` or a scan) that may hold them


@dataclass(frozen=True)
class PersonFaces:
    confirmed: set[str]  # the faces that are the person by what the user said
    suggested: set[str]  # the faces only suggested as the person (a guess: kept unless asked)


def faces_of_person(library: Library, name: str) -> PersonFaces:
    """The faces that are `name` now: named so by the user (a face's own name wins over its
    cluster's) or confirmed so in the tags; and the faces only suggested as `name`."""
    name = clean_name(name)
    labels = replay(library.read_labels())
    confirmed = {f for f, (n, _) in labels.face_names.items() if n == name}
    suggested: set[str] = set()
    if library.has_clusters():
        from facebatch.people.suggestions import STATUS_CONFIRMED, face_tags

        tags = face_tags(library)
        for face_id, person, status in zip(tags.face_ids, tags.person, tags.status):
            if person == name:
                (confirmed if status == STATUS_CONFIRMED else suggested).add(face_id)
    else:  # no clusters to check a cluster name against: the labels say who
        confirmed |= {f for f in labels.cluster_names if labels.name_of(f) == name}
    mentioned = name in labels.names() or any(name in nots for nots in labels.nots.values())
    if not confirmed and not suggested and not mentioned:
        raise NotFound(f"nobody is named {name}: `facebatch people` lists the names")
    return PersonFaces(confirmed, suggested - confirmed)


def faces_of_photos(library: Library, paths: list[str]) -> set[str]:
    photos = library.read_table("photos", ["path", "photo_id", "status"])
    known = set(photos["path"].to_pylist())
    wanted = {_as_scanned(os.path.abspath(p), known) for p in paths}
    ids = {i for p, i, s in zip(*(photos[c].to_pylist() for c in ("path", "photo_id", "status")))
           if p in wanted and i and s in LIVE_STATUSES}
    missing = wanted - known
    if missing:
        raise NotFound(f"no photo {sorted(missing)[0]} in the library: `facebatch export` lists them")
    faces = library.read_faces(["face_id", "photo_id"], pending=True)
    return {f for f, p in zip(faces["face_id"].to_pylist(), faces["photo_id"].to_pylist()) if p in ids}


def _as_scanned(path: str, known: set[str]) -> str:
    """The path the library knows a photo by: a RAW + JPEG pair's JPEG is scanned as its RAW."""
    if path in known:
        return path
    folder, name = os.path.split(path)
    if name in renditions_of_raws([name, *(os.path.basename(k) for k in known if os.path.dirname(k) == folder)]):
        stem = os.path.splitext(name)[0].lower()
        return next((k for k in known if os.path.dirname(k) == folder
                     and os.path.splitext(os.path.basename(k))[0].lower() == stem), path)
    return path


def known_faces(library: Library, face_ids: list[str]) -> set[str]:
    known = set(library.read_faces(["face_id"], pending=True)["face_id"].to_pylist())
    forgotten = set(library.read_forgotten()["face_id"].to_pylist())
    missing = [f for f in face_ids if f not in known | forgotten]
    if missing:
        raise NotFound(f"no face {missing[0]} in the library: `facebatch export` lists face ids")
    return set(face_ids)


def forget(library: Library, face_ids: set[str], names: set[str], wait: float = 0.0) -> ForgetResult:
    """Take these faces, and every label of these names, out of the library for good. What is to
    be forgotten is written down first (LIBRARY/forgetting.json), so that a forget cut short is
    finished by `check --repair`, names included; it goes when everything else is done."""
    library.require()
    with library.lock(wait):
        atomic_write_json(library.forgetting_path, {"faces": sorted(face_ids), "names": sorted(names)})
        result = erase(library, face_ids, names)
        library.forgetting_path.unlink()
    return result


def erase(library: Library, face_ids: set[str], names: set[str]) -> ForgetResult:
    """`forget` under the lock. Tombstones first: no scan embeds these faces again from then on."""
    faces = library.read_faces(["face_id", "photo_id", "path", "box", "video_span"], pending=True)
    rows = faces.filter(pc.is_in(faces["face_id"], _ids(face_ids)))
    names_of_photo = _names_by_photo(library, rows)
    _add_tombstones(library, rows)
    tombstones = library.read_forgotten()
    tombstones = tombstones.filter(pc.is_in(tombstones["face_id"], _ids(face_ids)))
    photo_ids = set(tombstones["photo_id"].to_pylist())  # those forgotten before too (a repair)
    sidecars, errors = _clean_sidecars(library, photo_ids, face_ids, names, names_of_photo)
    removed = library.purge_labels(lambda t: _forgotten_labels(t, face_ids, names))
    _clean_clusters(library, face_ids)
    library.drop_faces(face_ids)
    thumbnails = sum(_unlink(thumbnail_path(library, f)) for f in face_ids)
    derived = [name for name in DERIVED if _remove_tree(library.root / name)]
    adapter = (removed > 0 or bool(names)) and _remove_tree(library.adapter_dir)  # it learned from those labels
    set_aside = len(list(library.damaged_dir.iterdir())) if library.damaged_dir.exists() else 0
    return ForgetResult(rows.num_rows, removed, thumbnails, sidecars, errors, adapter, derived, set_aside)


def _ids(face_ids: set[str]) -> pa.Array:
    return pa.array(sorted(face_ids), pa.string())


def _names_by_photo(library: Library, rows: pa.Table) -> dict[str, set[str]]:
    """The names the labels give the faces of `rows`, by photo (to take them out of a video's
    sidecar, which lists its people with no region to find them by)."""
    labels = replay(library.read_labels())
    out: dict[str, set[str]] = {}
    for face_id, photo_id in zip(rows["face_id"].to_pylist(), rows["photo_id"].to_pylist()):
        if name := labels.name_of(face_id):
            out.setdefault(photo_id, set()).add(name)
    return out


def _add_tombstones(library: Library, rows: pa.Table) -> None:
    known = set(library.read_forgotten()["face_id"].to_pylist())
    new = rows.filter(pc.invert(pc.is_in(rows["face_id"], _ids(known))))
    if new.num_rows:
        now = datetime.now(timezone.utc)
        library.add_forgotten(new.append_column("forgotten_at", pa.array([now] * new.num_rows, pa.timestamp("ms", tz="UTC"))))


def _forgotten_labels(history: pa.Table, face_ids: set[str], names: set[str]) -> pa.Array:
    """Rows about a forgotten face, and names / "not"s of a forgotten person on any face."""
    about_face = pc.is_in(history["face_id"], _ids(face_ids))
    naming = pc.and_(pc.is_in(history["kind"], pa.array([KIND_NAME, KIND_NOT])),
                     pc.is_in(history["value"], pa.array(sorted(names), pa.string())))
    return pc.fill_null(pc.or_(about_face, naming), False)


def _clean_clusters(library: Library, face_ids: set[str]) -> None:
    if not library.has_clusters():
        return
    table = library.read_clusters()
    table = table.filter(pc.invert(pc.is_in(table["face_id"], _ids(face_ids))))
    state = library.read_cluster_state()
    moves = []
    for move in state.get("moves", []):
        kept = [i for i, f in enumerate(move["faces"]) if f not in face_ids]
        modes = move.get("modes", move["before"])
        moves.append({**move, "faces": [move["faces"][i] for i in kept], "before": [move["before"][i] for i in kept],
                      "modes": [modes[i] for i in kept]})
    library.write_clustering(table, None, {**state, "moves": moves} if "moves" in state else state)


def _clean_sidecars(library: Library, photo_ids: set[str], face_ids: set[str], names: set[str],
                    names_of_photo: dict[str, set[str]]) -> tuple[int, list[tuple[str, str]]]:
    """Take facebatch's regions of the faces out of the sidecars of their photos (every live
    photo's when a person is forgotten: the name may have been exported on any of them)."""
    photos = library.read_table("photos", ["path", "photo_id", "status"])
    stems = FolderStems()
    cleaned, errors = 0, []
    for path, photo_id, status in zip(*(photos[c].to_pylist() for c in ("path", "photo_id", "status"))):
        if status not in LIVE_STATUSES or not (names or photo_id in photo_ids):
            continue
        for sidecar in sidecar_paths(Path(path), stems):
            try:
                data = sidecar.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as error:
                errors.append((str(sidecar), f"cannot read it: {error.strerror or error}"))
                continue
            if FACEBATCH.encode() not in data:
                continue  # nothing of facebatch's in it
            try:
                new = take_back(data, face_ids, names, names_of_photo.get(photo_id, set()))
                if new != data:
                    write_sidecar(sidecar, new)  # removed when nothing is left in it
                    cleaned += 1
            except (XmpError, OSError) as error:
                errors.append((str(sidecar), f"{error}; left as it is"))
    return cleaned, errors


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def _remove_tree(path: Path) -> bool:
    if not path.exists():
        return False
    shutil.rmtree(path)
    return True


def leftovers(library: Library) -> list[tuple[Path, str]]:
    """Where a forgotten face is still found in the library's tables and thumbnails (file, what),
    for `facebatch check`; and a forget cut short."""
    found: list[tuple[Path, str]] = []
    if library.forgetting_path.exists():
        found.append((library.forgetting_path, "a forget was cut short"))
    forgotten = set(library.read_forgotten()["face_id"].to_pylist())
    if not forgotten:
        return found
    faces = library.read_faces(["face_id"], pending=True)["face_id"].to_pylist()
    if hits := forgotten & set(faces):
        found.append((library.faces_dir, f"{len(hits)} forgotten faces still have rows (embeddings)"))
    for path in [library.labels_path, *sorted(library.label_generations_dir.glob("labels-*.parquet"))]:
        try:
            table = pq.read_table(path, columns=["face_id"]) if path.exists() else None
        except (OSError, pa.ArrowException):
            continue  # an unreadable generation is the labels check's to report
        if table is not None and (hits := forgotten & set(table["face_id"].to_pylist())):
            found.append((path, f"{len(hits)} forgotten faces still have labels"))
    if library.has_clusters() and (hits := forgotten & set(library.read_clusters()["face_id"].to_pylist())):
        found.append((library.clusters_path, f"{len(hits)} forgotten faces are still in clusters"))
    if thumbnails := [f for f in forgotten if thumbnail_path(library, f).exists()]:
        found.append((thumbnail_path(library, thumbnails[0]).parent.parent,
                      f"{len(thumbnails)} forgotten faces still have thumbnails"))
    return found
