"""`facebatch check`: is every table of the library readable and whole, and, with repair, mend it.

Nothing is deleted: a damaged file is moved to LIBRARY/damaged/. What each finding means:

- a photos/faces part that can't be read (cut short, bad sector, wrong schema): set aside; the
  next `facebatch scan` scans its photos again, with the same photo and face ids (content hash
  and box), so the names given to those faces still hold;
- a part without its stats file (a scan killed while writing it): removed by the next scan;
- a face id or photo path twice (a scan killed between writing and reconciling): reconciled;
- labels.parquet unreadable: the newest readable generation (LIBRARY/labels-generations/) is
  put back, and the line says which action it ends at (later ones are lost);
- clusters files unreadable: set aside; `facebatch cluster` makes them again from the faces and
  the labels;
- library.json unreadable: written again from the model recorded in the parts' metadata;
- a forgotten face (`facebatch forget`) found anywhere but in its tombstone, its rows, labels,
  cluster or thumbnail (a forget cut short): forgotten again.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from facebatch.errors import DamagedPart, LibraryDamaged, LibraryMissing
from facebatch.files import atomic_write_bytes, atomic_write_json
from facebatch.forget import erase, leftovers
from facebatch.schema import LABELS_SCHEMA
from facebatch.models.catalog import DEFAULT_MODEL
from facebatch.store import Library, LibraryModel
from facebatch.wording import counted


@dataclass
class Finding:
    path: Path
    problem: str
    repair: str  # what repairing does (or did)
    repaired: bool = False

    def line(self) -> str:
        return f"{'repaired' if self.repaired else 'damaged'}: {self.path}: {self.problem}; {self.repair}"


@dataclass
class CheckReport:
    findings: list[Finding]
    parts: int
    photos: int
    faces: int
    label_actions: int

    @property
    def healthy(self) -> bool:
        return all(f.repaired for f in self.findings)

    def lines(self, root: Path) -> list[str]:
        lines = [f.line() for f in self.findings]
        open_ = sum(not f.repaired for f in self.findings)
        if open_:
            lines.append(f"library {root}: {counted(open_, 'problem')}; `facebatch check --repair` mends "
                         f"{'it' if open_ == 1 else 'them'}")
        else:
            lines.append(f"library {root} is whole: {counted(self.parts, 'part')}, {counted(self.photos, 'photo')}, "
                         f"{counted(self.faces, 'face')}, {counted(self.label_actions, 'label action')}")
        return lines


def check_library(library: Library, repair: bool = False) -> CheckReport:
    """Every table read in full; with `repair`, each problem mended as the module docstring says."""
    if not library.exists() and not library.finished_parts("photos"):
        raise LibraryMissing(library.root)
    with library.lock():
        findings = _info(library, repair)
        findings += _parts(library, repair)
        findings += _duplicates(library, repair)
        findings += _labels(library, repair)
        findings += _clusters(library, repair)
        findings += _forgotten(library, repair)
        photos = _rows(library, "photos")
        faces = _rows(library, "faces")
        try:
            actions = len(set(library.read_labels()["action"].to_pylist()))
        except LibraryDamaged:
            actions = 0
        parts = len(library.finished_parts("photos"))
    return CheckReport(findings, parts, photos, faces, actions)


def _rows(library: Library, table: str) -> int:
    total = 0
    for number in library.finished_parts(table):
        try:
            total += pq.read_metadata(library.part_path(table, number)).num_rows
        except (OSError, pa.ArrowException):
            pass
    return total


def _info(library: Library, repair: bool) -> list[Finding]:
    try:
        if library.read_info() is not None:
            return []
        problem = "missing"
    except LibraryDamaged as error:
        problem = str(error)
    finding = Finding(library.info_path, problem, "--repair writes it again from the model in the parts' metadata")
    models = {_part_model(library.part_path("faces", n)) for n in library.finished_parts("faces")} - {None}
    if repair and len(models) == 1:
        _set_aside_file(library, library.info_path)
        model = LibraryModel.from_info({"model": models.pop().decode()})
        # Whether the user chose the model is lost with the file: keep it where it is rather than
        # move it to the default behind the user's back.
        atomic_write_json(library.info_path, {"format": 1, **replace(model, chosen=model.embedding != DEFAULT_MODEL).to_json()})
        finding.repair, finding.repaired = "written again from the model in the parts' metadata", True
    return [finding]


def _parts(library: Library, repair: bool) -> list[Finding]:
    findings = []
    for damaged in library.damaged_parts(full=True):
        finding = Finding(damaged.path, damaged.reason,
                          "--repair sets its shard aside; the next `facebatch scan` scans its photos again")
        if repair:
            library.set_aside(damaged.number)
            finding.repair, finding.repaired = (f"shard set aside in {library.damaged_dir}; run `facebatch scan` to "
                                                "scan its photos again"), True
        findings.append(finding)
    done = set(library.part_numbers(library.shards_dir))
    unfinished = [Finding(folder / f"part-{number:06d}.parquet", "unfinished (a scan was killed while writing it)",
                          "the next `facebatch scan` removes it")
                  for folder in (library.photos_dir, library.faces_dir)
                  for number in sorted(library.part_numbers(folder) - done)]
    if repair and unfinished:
        library.remove_unfinished_parts()  # all of them at once
        for finding in unfinished:
            finding.repair, finding.repaired = "removed", True
    return findings + unfinished


def _duplicates(library: Library, repair: bool) -> list[Finding]:
    try:
        paths = Counter(library.read_table("photos", ["path"])["path"].to_pylist())
        faces = Counter(library.read_faces(["face_id"], pending=True)["face_id"].to_pylist())
    except LibraryDamaged:
        return []  # reported, part by part, above
    twice = [(library.photos_dir, sum(n > 1 for n in paths.values()), "paths"),
             (library.faces_dir, sum(n > 1 for n in faces.values()), "face ids")]
    findings = [Finding(folder, f"{count} {what} appear twice (a scan was killed before it reconciled)",
                        "the next `facebatch scan` reconciles them") for folder, count, what in twice if count]
    if repair and findings:
        library.reconcile()  # both tables at once
        for finding in findings:
            finding.repair, finding.repaired = "reconciled", True
    return findings


def _labels(library: Library, repair: bool) -> list[Finding]:
    try:
        library.read_labels()
        return []
    except LibraryDamaged as error:
        problem = str(error).split(": `facebatch check`")[0]
    generations = sorted(library.label_generations_dir.glob("labels-*.parquet"), reverse=True)
    readable, table = next(((g, t) for g in generations if (t := _readable(g)) is not None), (None, None))
    if readable is None or table is None:
        return [Finding(library.labels_path, problem, "no readable earlier generation: the names are lost")]
    actions = table["action"].to_pylist() if "action" in table.column_names else []
    finding = Finding(library.labels_path, problem,
                      f"--repair puts back {readable.name} (up to action {max(actions, default=0)}); later labels are lost")
    if repair:
        _set_aside_file(library, library.labels_path)
        atomic_write_bytes(library.labels_path, readable.read_bytes())
        finding.repair = f"put back {readable.name} (up to action {max(actions, default=0)}); labels given after it are lost"
        finding.repaired = True
    return [finding]


def _part_model(path: Path) -> bytes | None:
    """The model a faces part recorded in its metadata; None when the part can't be read (a damaged
    part is reported by the part checks, it must not stop this one)."""
    try:
        return (pq.read_schema(path).metadata or {}).get(b"facebatch.model")
    except (OSError, pa.ArrowException):
        return None


def _readable(path: Path) -> pa.Table | None:
    """The labels generation's table when it is readable and looks like labels, else None."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        return None
    names = set(table.column_names)
    return table if set(LABELS_SCHEMA.names) <= names or {"face_id", "kind", "value"} <= names else None


def _clusters(library: Library, repair: bool) -> list[Finding]:
    findings = []
    for path in (library.clusters_path, library.cluster_pairs_path, library.cluster_state_path):
        if not path.exists():
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            else:
                pq.read_table(path)
            continue
        except (OSError, ValueError, pa.ArrowException) as exc:
            problem = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        finding = Finding(path, problem, "--repair sets it aside; `facebatch cluster` makes it again")
        if repair:
            _set_aside_file(library, path)
            finding.repair, finding.repaired = "set aside; run `facebatch cluster` to make it again", True
        findings.append(finding)
    return findings


def _forgotten(library: Library, repair: bool) -> list[Finding]:
    """Faces the user had forgotten must be nowhere but in their tombstones (a forget cut short)."""
    try:
        found = leftovers(library)
    except (LibraryDamaged, DamagedPart):
        return []  # reported by the checks of those files
    findings = [Finding(path, what, "--repair finishes forgetting them") for path, what in found]
    if repair and findings:
        faces, names = set(library.read_forgotten()["face_id"].to_pylist()), set()
        if library.forgetting_path.exists():  # the forget cut short: its faces and names
            pending = json.loads(library.forgetting_path.read_text())
            faces, names = faces | set(pending.get("faces", [])), set(pending.get("names", []))
        erase(library, faces, names)
        library.forgetting_path.unlink(missing_ok=True)
        for finding in findings:
            finding.repair, finding.repaired = "forgotten again", True
    return findings


def _set_aside_file(library: Library, path: Path) -> None:
    if path.exists():
        library.damaged_dir.mkdir(exist_ok=True)
        os.replace(path, library.damaged_dir / f"{path.name}.{os.getpid()}-{len(os.listdir(library.damaged_dir))}")
