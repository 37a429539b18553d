"""The `facebatch` command: a thin click layer over the library.

Options become a frozen config object; library errors (`FacebatchError`) become one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from facebatch import __version__
from facebatch.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DETECT_MAX_SIDE,
    DEFAULT_MIN_FACE,
    DEFAULT_MIN_SCORE,
    DetectionSettings,
    ScanConfig,
    library_path,
)
from facebatch.errors import FacebatchError


class UserError(click.ClickException):
    def __init__(self, error: FacebatchError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into click's one-line `Error: ...` with the error's exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FacebatchError as error:
            raise UserError(error) from None

    return wrapper


def _library(path: Path) -> Any:
    """The library object, imported late: `facebatch --help` stays fast."""
    from facebatch.store import Library

    return Library(path)


def _echo_json(obj: Any) -> None:
    import json

    click.echo(json.dumps(obj, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--library",
    envvar="FACEBATCH_LIBRARY",
    type=click.Path(file_okay=False),
    help="Library folder for the tables [default: ./facebatch-library; env FACEBATCH_LIBRARY].",
)
@click.version_option(__version__, prog_name="facebatch")
@click.pass_context
def cli(ctx: click.Context, library: str | None) -> None:
    """Find the people in a photo library.

    \b
    Example:
        facebatch scan ~/Pictures
        facebatch --library /nas/faces scan /nas/photos --scheduler tcp://10.0.0.5:8786
    """
    ctx.obj = library_path(library)


@cli.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path())
@click.option("--scheduler", metavar="ADDRESS", help="Use an existing Dask cluster (tcp://host:8786).")
@click.option("--workers", type=int, help="Local worker processes [default: one per core / threads].")
@click.option("--threads-per-worker", type=int, default=1, show_default=True, help="Torch threads per local worker.")
@click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True, help="Faces per forward pass.")
@click.option("--shard-size", type=int, help="Photos per shard [default: 256, fewer for small scans].")
@click.option(
    "--detect-size",
    type=int,
    default=DEFAULT_DETECT_MAX_SIDE,
    show_default=True,
    help="Longest side of the copy faces are detected on.",
)
@click.option(
    "--min-face", type=int, default=DEFAULT_MIN_FACE, show_default=True, help="Smallest face kept (pixels)."
)
@click.option(
    "--min-score", type=float, default=DEFAULT_MIN_SCORE, show_default=True, help="Lowest detection score kept."
)
@click.option(
    "--weights",
    default="casia-webface",
    show_default=True,
    help="casia-webface (offline), vggface2 (downloads) or a state-dict FILE.pt.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--include", multiple=True, metavar="GLOB", help="Only photos matching GLOB (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip photos matching GLOB (repeatable).")
@click.option("--force", is_flag=True, help="Run the models again on every photo, even unchanged ones.")
@click.option("--retry-errors", is_flag=True, help="Try again photos that failed last time though unchanged.")
@click.option("--strict", is_flag=True, help="Exit 1 when any photo failed.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary; errors only.")
@click.pass_obj
@user_errors
def scan(
    library: Path,
    folders: tuple[str, ...],
    scheduler: str | None,
    workers: int | None,
    threads_per_worker: int,
    batch_size: int,
    shard_size: int | None,
    detect_size: int,
    min_face: int,
    min_score: float,
    weights: str,
    device: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    force: bool,
    retry_errors: bool,
    strict: bool,
    quiet: bool,
) -> None:
    """Detect and embed every face under FOLDERS into the library's Parquet tables.

    Re-running only looks at new and changed photos; a killed scan resumes where it stopped.

    \b
    Example:
        facebatch scan ~/Pictures
        facebatch scan /photos --exclude '*/trash/*' --scheduler tcp://10.0.0.5:8786
    """
    from facebatch.progress import ProgressBar
    from facebatch.scan.driver import scan as run_scan

    config = ScanConfig(
        roots=folders,
        library=library,
        weights=weights,
        detection=DetectionSettings(max_side=detect_size, min_face=min_face, min_score=min_score),
        batch_size=batch_size,
        shard_size=shard_size,
        workers=workers,
        threads_per_worker=threads_per_worker,
        scheduler=scheduler,
        device=device,
        include=include,
        exclude=exclude,
        force=force,
        retry_errors=retry_errors,
    )
    logging.getLogger("distributed").setLevel(logging.ERROR)
    bar = ProgressBar(enabled=False if quiet else None)
    try:
        summary = run_scan(config, progress=bar)
    finally:
        bar.close()
    if not quiet:
        for warning in summary.warnings:
            click.echo(f"warning: {warning}", err=True)
        click.echo(summary.line())
    if strict and summary.failed:
        sys.exit(1)


@cli.command()
@click.argument("photo_a", type=click.Path(dir_okay=False))
@click.argument("photo_b", type=click.Path(dir_okay=False))
@click.option(
    "--face",
    "face_index",
    type=click.IntRange(min=0),
    multiple=True,
    metavar="N",
    help="Compare face N (0-based, best detection first) instead of the largest; "
    "once: both photos, twice: photo A then photo B.",
)
@click.option("--threshold", type=float, help="Distance at or below which it is the same person [default: measured on LFW].")
@click.option("--weights", default="casia-webface", show_default=True, help="casia-webface, vggface2 or a FILE.pt.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@user_errors
def verify(
    photo_a: str,
    photo_b: str,
    face_index: tuple[int, ...],
    threshold: float | None,
    weights: str,
    device: str,
    as_json: bool,
) -> None:
    """Is the face in PHOTO_A the same person as the face in PHOTO_B?

    Compares the largest face of each photo. Exit status: 0 same person, 1 different people,
    2 error (no face found, unreadable photo). The default threshold is chosen for the default
    casia-webface weights; give --threshold with other weights.

    \b
    Example:
        facebatch verify passport.jpg selfie.jpg
        facebatch verify group.jpg portrait.jpg --face 3 --face 0 --json
    """
    from facebatch.people.verification import DEFAULT_THRESHOLD, EXIT_DIFFERENT, EXIT_ERROR, EXIT_SAME, build_pipeline
    from facebatch.people.verification import verify as run_verify

    if len(face_index) > 2:
        raise FacebatchError("--face is given at most twice (photo A, photo B)", exit_code=EXIT_ERROR)
    faces = (face_index[0], face_index[-1]) if face_index else (None, None)
    try:
        pipeline = build_pipeline(weights, device)
    except FacebatchError as error:
        raise FacebatchError(str(error), exit_code=EXIT_ERROR) from None
    result = run_verify(pipeline, photo_a, photo_b, faces, DEFAULT_THRESHOLD if threshold is None else threshold)
    if as_json:
        _echo_json({**result.to_json(), "model": pipeline.model})
    else:
        click.echo(result.line())
    sys.exit(EXIT_SAME if result.same else EXIT_DIFFERENT)


@cli.group("eval")
def eval_group() -> None:
    """Measure quality: verification accuracy on labelled pairs, clustering against true identities.

    \b
    Example:
        facebatch eval pairs pairs.csv --root ~/datasets/lfw
    """


@eval_group.command("pairs")
@click.argument("pairs_csv", type=click.Path(dir_okay=False))
@click.option("--root", type=click.Path(file_okay=False), default=".", show_default=True, help="Folder the CSV's paths are relative to.")
@click.option("--flip", is_flag=True, help="Test-time augmentation: add each face's mirror image embedding.")
@click.option("--folds", "n_folds", type=click.IntRange(min=2), default=10, show_default=True, help="Folds when the CSV has no fold column.")
@click.option("--weights", default="casia-webface", show_default=True, help="casia-webface, vggface2 or a FILE.pt.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True, help="Faces per forward pass.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@user_errors
def eval_pairs(
    pairs_csv: str,
    root: str,
    flip: bool,
    n_folds: int,
    weights: str,
    device: str,
    batch_size: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Verification accuracy on labelled pairs of photos (the LFW protocol).

    PAIRS_CSV rows are `path1,path2,same[,fold]` (same: 1/0; an optional header row). Each fold's
    threshold is chosen on the other folds; without a fold column pair i goes to fold i % --folds.
    The face compared is the one nearest the photo's centre; a pair with a photo where no face is
    found counts as wrong and is listed.

    \b
    Example:
        facebatch eval pairs pairs.csv --root ~/datasets/lfw --flip
        facebatch eval pairs pairs.csv --json > lfw.json
    """
    from facebatch.progress import ProgressBar
    from facebatch.people.verification import build_pipeline, evaluate_pairs, read_pairs

    if batch_size < 1:
        raise FacebatchError(f"--batch-size must be at least 1, got {batch_size}", exit_code=2)
    root_path = Path(root).expanduser()
    pairs = read_pairs(Path(pairs_csv), root_path)
    pipeline = build_pipeline(weights, device, batch_size)
    bar = ProgressBar(enabled=False if quiet else None)
    try:
        result = evaluate_pairs(pipeline, pairs, root_path, flip, n_folds, progress=bar)
    finally:
        bar.close()
    if as_json:
        _echo_json({**result.to_json(), "model": pipeline.model})
    else:
        for line in result.lines():
            click.echo(line)


@cli.command()
@click.option("--min-cluster-size", type=int, default=None, help="Smallest group of faces that is a cluster [default: 3].")
@click.option("--min-samples", type=int, default=None, help="HDBSCAN min_samples: higher leaves more faces out [default: 1].")
@click.option("--method", type=click.Choice(["eom", "leaf"]), default=None, help="HDBSCAN cluster selection [default: leaf].")
@click.option("--epsilon", type=float, default=None, help="Join clusters closer than this distance [default: 0].")
@click.option("--pca-dims", type=int, default=None, help="Reduce embeddings to this many dimensions first; 0: off [default: 64].")
@click.option("--min-face-size", type=float, default=None,
              help="Leave faces smaller than this (pixels, shorter side) unclustered [default: 40].")
@click.pass_obj
@user_errors
def cluster(
    library: Path,
    min_cluster_size: int | None,
    min_samples: int | None,
    method: str | None,
    epsilon: float | None,
    pca_dims: int | None,
    min_face_size: float | None,
) -> None:
    """Group every face in the library by person (HDBSCAN over the embeddings).

    Clusters that are the same group of faces as last time keep their number; names, merges and
    ignores given before are applied again. No photo is opened.

    \b
    Example:
        facebatch cluster
        facebatch scan ~/Pictures/2024 && facebatch cluster
    """
    from facebatch.people.clustering import ClusterSettings, cluster_library
    from facebatch.people.labels import build_view

    given = {"min_cluster_size": min_cluster_size, "min_samples": min_samples, "method": method,
             "epsilon": epsilon, "pca_dims": pca_dims, "min_face_size": min_face_size}
    settings = ClusterSettings(**{k: v for k, v in given.items() if v is not None})
    lib = _library(library)
    summary = cluster_library(lib, settings)
    view = build_view(lib)
    named = sum(1 for c in view.clusters.values() if c.person)
    click.echo(summary.line() + f"; {named} named")
    for info in view.clusters.values():
        if info.conflict:
            click.echo("conflict: " + info.conflict_line())


@cli.command(name="clusters")
@click.option("--limit", type=int, default=50, show_default=True, help="Show at most this many clusters (0: all).")
@click.option("--examples", type=int, default=3, show_default=True, help="Example photos per cluster.")
@click.pass_obj
@user_errors
def list_clusters(library: Path, limit: int, examples: int) -> None:
    """List clusters, biggest first: number, size, person (or unnamed), example photos.

    \b
    Example:
        facebatch clusters
        facebatch clusters --limit 0 --examples 1
    """
    import numpy as np

    from facebatch.people.labels import build_view

    lib = _library(library)
    view = build_view(lib)
    faces = lib.read_faces(["face_id", "path"])
    path_of = dict(zip(faces["face_id"].to_pylist(), faces["path"].to_pylist()))
    order = sorted(view.clusters.values(), key=lambda c: (-c.size, c.cluster_id))
    shown = order if limit <= 0 else order[:limit]
    # One sort instead of a scan per cluster: clusters x faces is 10^9 at 100,000 faces.
    by_cluster = np.lexsort((-view.probability, view.cluster_ids))
    starts = np.searchsorted(view.cluster_ids[by_cluster], [info.cluster_id for info in shown])
    for info, start in zip(shown, starts.tolist()):
        members = view.face_ids[by_cluster[start:start + info.size]]
        best = [path_of[f] for f in members if f in path_of]
        what = "ignored" if info.ignored else (info.person or "unnamed")
        if info.conflict:
            what += " (conflict)"
        click.echo(f"{info.cluster_id:>6}  {info.size:>5} faces  {what}  " + "  ".join(best[:examples]))
    unclustered = int((view.cluster_ids < 0).sum())
    hidden = len(order) - len(shown)
    click.echo(f"{len(order)} clusters{f' ({hidden} not shown)' if hidden else ''}, {unclustered} unclustered faces")
    for info in order:
        if info.conflict:
            click.echo("conflict: " + info.conflict_line())


@cli.group()
def label() -> None:
    """Name a cluster or one face; say that a face is not someone.

    \b
    Example:
        facebatch label cluster 12 Alice
        facebatch label face 3f2a9c0d1e4b5a67 Bob
        facebatch label face 3f2a9c0d1e4b5a67 --not Alice
    """


@label.command(name="cluster")
@click.argument("cluster_id", type=int)
@click.argument("name")
@click.pass_obj
@user_errors
def label_cluster_command(library: Path, cluster_id: int, name: str) -> None:
    """Give NAME to every face of cluster CLUSTER_ID (faces labelled one by one keep their label).

    \b
    Example:
        facebatch label cluster 12 Alice
        facebatch label cluster 7 "Zoë van der Berg"
    """
    from facebatch.people.labels import label_cluster

    click.echo(label_cluster(_library(library), cluster_id, name))


@label.command(name="face")
@click.argument("face_id")
@click.argument("name")
@click.option("--not", "negative", is_flag=True, help="This face is NOT NAME: never give it that name.")
@click.pass_obj
@user_errors
def label_face_command(library: Path, face_id: str, name: str, negative: bool) -> None:
    """Name one face (outranks its cluster's name), or with --not rule a name out for good.

    \b
    Example:
        facebatch label face 3f2a9c0d1e4b5a67 Bob
        facebatch label face 3f2a9c0d1e4b5a67 --not Alice
    """
    from facebatch.people.labels import label_face

    click.echo(label_face(_library(library), face_id, name, negative))


@cli.command()
@click.argument("cluster_ids", nargs=-1, required=True, type=int)
@click.pass_obj
@user_errors
def merge(library: Path, cluster_ids: tuple[int, ...]) -> None:
    """Say that clusters are the same person: they become the first number, now and after re-runs.

    \b
    Example:
        facebatch merge 12 31
    """
    from facebatch.people.labels import merge_clusters

    click.echo(merge_clusters(_library(library), list(cluster_ids)))


@cli.group()
def ignore() -> None:
    """Mark strangers: an ignored cluster is never suggested or exported as a person.

    \b
    Example:
        facebatch ignore cluster 7
        facebatch ignore cluster 7 --undo
    """


@ignore.command(name="cluster")
@click.argument("cluster_id", type=int)
@click.option("--undo", is_flag=True, help="Stop ignoring the cluster.")
@click.pass_obj
@user_errors
def ignore_cluster_command(library: Path, cluster_id: int, undo: bool) -> None:
    """Ignore cluster CLUSTER_ID (remembered across re-clusters).

    \b
    Example:
        facebatch ignore cluster 7
    """
    from facebatch.people.labels import ignore_cluster

    click.echo(ignore_cluster(_library(library), cluster_id, undo))


@cli.command()
@click.pass_obj
@user_errors
def people(library: Path) -> None:
    """List named people: confirmed and suggested faces, photos, clusters.

    \b
    Example:
        facebatch people
    """
    from facebatch.people.labels import people as list_people

    lib = _library(library)
    from facebatch.people.clustering import require_clusters

    require_clusters(lib)
    found = list_people(lib)
    for person in found:
        clusters = ", ".join(map(str, person.clusters)) or "-"
        click.echo(f"{person.name}\t{person.confirmed} confirmed, {person.suggested} suggested faces\t"
                   f"{person.photos} photos\tclusters {clusters}")
    click.echo(f"{len(found)} people")


@cli.command(name="export")
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["json", "jsonl", "parquet"]), default=None,
              help="[default: from the file name, else json]")
@click.option("--only-named", is_flag=True, help="Only faces with a person (and photos with one).")
@click.option("--min-confidence", type=float, default=0.0, show_default=True,
              help="Suggestions below this confidence are exported as unknown.")
@click.pass_obj
@user_errors
def export_command(library: Path, output: str, fmt: str | None, only_named: bool, min_confidence: float) -> None:
    """Write per-photo tags: every face with its box, person, status and confidence.

    \b
    Example:
        facebatch export tags.json
        facebatch export tags.parquet --only-named --min-confidence 0.5
    """
    from facebatch.people.clustering import require_clusters
    from facebatch.exports.tags import FORMATS, ExportSettings, export_tags

    suffix = Path(output).suffix.lstrip(".").lower()
    settings = ExportSettings(
        output=Path(output), format=fmt or (suffix if suffix in FORMATS else "json"),
        only_named=only_named, min_confidence=min_confidence,
    )
    lib = _library(library)
    require_clusters(lib)
    summary = export_tags(lib, settings)
    click.echo(summary.line(settings.output))


@eval_group.command("clusters")
@click.argument("truth_csv", type=click.Path(dir_okay=False))
@click.option("--root", type=click.Path(file_okay=False), default=".", show_default=True, help="Folder the CSV's paths are relative to.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@user_errors
def eval_clusters(library: Path, truth_csv: str, root: str, as_json: bool) -> None:
    """Quality of the library's current clustering against true identities.

    TRUTH_CSV rows are `path,identity` (an optional header row; extra columns are ignored when the
    header names `path` and `identity`). Each photo labels its face nearest the centre. Reports
    pairwise and BCubed precision/recall/F (unclustered faces count as clusters of one), coverage
    (share of labelled faces in a cluster) and clusters found vs identities.

    \b
    Example:
        facebatch cluster && facebatch eval clusters truth.csv --root ~/Pictures
        facebatch eval clusters lfw/manifest.csv --root lfw/images --json
    """
    from facebatch.people.clustering import read_assignments, require_clusters
    from facebatch.people.evaluation import evaluate_library_clusters, read_truth

    truth = read_truth(Path(truth_csv))
    lib = _library(library)
    require_clusters(lib)
    result = evaluate_library_clusters(lib, truth, Path(root).expanduser(), read_assignments(lib))
    if as_json:
        _echo_json(result.to_json())
    else:
        for line in result.lines():
            click.echo(line)


@cli.command()
@click.option("--out", type=click.Path(file_okay=False), help="Site folder [default: LIBRARY/report].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar; print only the index path.")
@click.pass_obj
@user_errors
def report(library: Path, out: str | None, quiet: bool) -> None:
    """Write the review site (every cluster as faces) and print the path of its index page.

    Open it in any browser, from disk: no server, no network. Thumbnails are cached in the
    library, so a report after a new scan only crops the new faces.

    \b
    Example:
        facebatch report
        facebatch report --out ~/people-site
    """
    from facebatch.progress import ProgressBar
    from facebatch.review.report import write_report

    bar = ProgressBar(enabled=False if quiet else None, unit="thumbnails")
    try:
        index = write_report(_library(library), Path(out) if out else None, bar)
    finally:
        bar.close()
    click.echo(index)


@cli.group()
def show() -> None:
    """Contact sheets: a grid of face crops, to see who a cluster or person is.

    \b
    Example:
        facebatch show cluster 12 -o c12.jpg
        facebatch show person Alice -o alice.png
    """


def _contact_sheet(library: Path, pick: Callable[[Any], list], title: str, out: str) -> None:
    from facebatch.review.report import collect, write_contact_sheet

    lib = _library(library)
    click.echo(write_contact_sheet(lib, pick(collect(lib)), title, Path(out)))


@show.command(name="cluster")
@click.argument("cluster_id", type=int)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Image file (.jpg or .png).")
@click.pass_obj
@user_errors
def show_cluster(library: Path, cluster_id: int, output: str) -> None:
    """Write a contact sheet of cluster CLUSTER_ID's faces and print its path.

    \b
    Example:
        facebatch show cluster 12 -o c12.jpg
    """
    from facebatch.review.report import faces_of_cluster

    _contact_sheet(library, lambda site: faces_of_cluster(site, cluster_id), f"Cluster {cluster_id}", output)


@show.command(name="person")
@click.argument("name")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Image file (.jpg or .png).")
@click.pass_obj
@user_errors
def show_person(library: Path, name: str, output: str) -> None:
    """Write a contact sheet of NAME's faces (confirmed and suggested) and print its path.

    \b
    Example:
        facebatch show person "Grace Hopper" -o grace.png
    """
    from facebatch.review.report import faces_of_person

    _contact_sheet(library, lambda site: faces_of_person(site, name), name, output)


@cli.command()
@click.argument("photo", type=click.Path(dir_okay=False))
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="People listed per face.")
@click.option("--threshold", type=float, help="Largest distance accepted as a person [default: measured on LFW].")
@click.option("--weights", default="casia-webface", show_default=True, help="The weights the library was scanned with.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@user_errors
def identify(
    library: Path, photo: str, top_k: int, threshold: float | None, weights: str, device: str, as_json: bool
) -> None:
    """Who is in PHOTO? Each face with the best named person and a confidence, or unknown.

    Faces are matched against the library's named people (labelled faces and members of named
    clusters). Exit 2 when the photo has no face or can't be read.

    \b
    Example:
        facebatch identify new-photo.jpg
        facebatch identify party.jpg --top-k 5 --json
    """
    from facebatch.people.labels import DEFAULT_SUGGEST_DISTANCE
    from facebatch.people.recognition import identify as run_identify
    from facebatch.people.verification import build_pipeline

    limit = DEFAULT_SUGGEST_DISTANCE if threshold is None else threshold
    faces = run_identify(_library(library), build_pipeline(weights, device), photo, top_k, limit)
    if as_json:
        _echo_json({"photo": photo, "threshold": limit, "faces": [f.to_json() for f in faces]})
    else:
        for face in faces:
            click.echo(face.line())


def main() -> None:
    cli(prog_name="facebatch")


if __name__ == "__main__":
    main()
