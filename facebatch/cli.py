"""The `facebatch` command: a thin click layer over the library.

Options become frozen, validated config objects; the library returns data and the commands here
format it. Errors become one line on stderr and an exit code chosen in one place, `EXIT_CODES`,
from the exception's class: never a traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import shlex
import shutil
import sys
import threading
from collections import Counter
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
    PRECISIONS,
    RUNTIMES,
    DetectionSettings,
    ModelSettings,
    ScanConfig,
    library_path,
)
from facebatch.errors import (
    DeviceUnavailable,
    FacebatchError,
    InputError,
    LibraryBusy,
    LibraryDamaged,
    LibraryMissing,
    NotFound,
    OutputError,
    UsageError,
)
from facebatch.models.catalog import model_for
from facebatch.schema import ERROR_KINDS
from facebatch.models.weights import DEFAULT_WEIGHTS
from facebatch.wording import counted

# Exit codes, by what went wrong (README, "Exit codes"). `verify` adds its own: 0 same person,
# 1 different people, 2 anything else.
EXIT_CODES: dict[type[Exception], int] = {
    UsageError: 1,
    NotFound: 1,
    OutputError: 1,
    InputError: 2,
    LibraryMissing: 2,
    LibraryDamaged: 2,
    DeviceUnavailable: 2,
    LibraryBusy: 3,
}
EXIT_FAILED = 1  # any other FacebatchError, and click's usage errors (a bad option)
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report a SIGINT


def exit_code_for(error: Exception) -> int:
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_FAILED


class FacebatchGroup(click.Group):
    """click.Group whose errors, click's own usage errors included, are one line, and whose help
    lists the commands in the order of the job (scan first), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.UsageError as error:
            command = error.ctx.command_path if error.ctx else "facebatch"
            _fail(f"{error.format_message()} (`{command} --help`)", EXIT_FAILED)
        except click.ClickException as error:
            _fail(error.format_message(), EXIT_FAILED)
        except click.exceptions.Abort:  # Ctrl-C: every finished shard and label is on disk already
            _fail("interrupted; run the same command again to go on (a scan resumes where it stopped)",
                  EXIT_INTERRUPTED)
        except FacebatchError as error:
            _fail(str(error), exit_code_for(error))


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _library(path: Path) -> Any:
    """The library object, imported late: `facebatch --help` stays fast."""
    from facebatch.store import Library

    return Library(path)


def _echo_json(obj: Any) -> None:
    import json

    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


LIBRARY_HELP = "Library folder [default: ./facebatch-library; env FACEBATCH_LIBRARY]."
GROUP_LIBRARY = "facebatch.library"  # ctx.meta key: `--library` given after a group (`label --library X cluster`)


def with_library(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--library DIR` after the command too (`facebatch clusters --library X`); it wins over the
    one after a group, which wins over the one before the command and over FACEBATCH_LIBRARY. The
    command gets the Library."""

    @click.option("--library", "library_option", type=click.Path(file_okay=False), default=None, help=LIBRARY_HELP)
    @click.pass_context
    @functools.wraps(command)
    def wrapper(ctx: click.Context, *args: Any, library_option: str | None, **kwargs: Any) -> Any:
        root = library_path(library_option) if library_option else ctx.meta.get(GROUP_LIBRARY, ctx.find_root().obj)
        return command(_library(root), *args, **kwargs)

    return wrapper


def library_group(group: Callable[..., Any]) -> Callable[..., Any]:
    """`--library DIR` after a group's name too (`facebatch label --library X cluster 3 Alice`), as
    README promises it before or after every command."""

    @click.option("--library", "library_option", type=click.Path(file_okay=False), default=None, help=LIBRARY_HELP)
    @click.pass_context
    @functools.wraps(group)
    def wrapper(ctx: click.Context, *args: Any, library_option: str | None, **kwargs: Any) -> Any:
        if library_option:
            ctx.meta[GROUP_LIBRARY] = library_path(library_option)
        return group(*args, **kwargs)

    return wrapper


@click.group(name="facebatch", cls=FacebatchGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    The whole job:
        facebatch run ~/Pictures                 scan, cluster, export tags, write the site
    Step by step:
        facebatch scan ~/Pictures                detect and embed every face
        facebatch cluster                        group the faces into people
        facebatch clusters                       list them (or: facebatch report)
        facebatch label cluster 12 Alice         name a person once
        facebatch export tags.json               per-photo tags, names on every photo
    \b
    Every command takes --library DIR (before or after the command) or FACEBATCH_LIBRARY.
    """
    ctx.obj = library_path(library)


# --------------------------------------------------------------------------- scanning


def model_options(weights_help: str = "casia-webface, vggface2 or a FILE.pt.", of_library: bool = False,
                  model_of_library: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--model, --weights, --device, --runtime and --precision, declared once for every command that
    embeds. `model_of_library`: the model and weights default to the library's (scan, identify);
    `of_library`: the runtime and precision too (identify)."""
    from facebatch.models.catalog import DEFAULT_MODEL, MODELS

    ours = "[default: the library's]"
    model_default = f"[default: the library's; {DEFAULT_MODEL} for a new one]" if model_of_library else f"[default: {DEFAULT_MODEL}]"
    weights_default = "[default: the library's; casia-webface for a new one]" if model_of_library else "[default: casia-webface]"
    runtime_help = (f"onnx or torch {ours}." if of_library
                    else "onnx (no torch) or torch [default: onnx; torch with --device cuda].")
    precision_help = (f"fp32 or int8 {ours}." if of_library
                      else "FaceNet and SFace in fp32 or int8 (ONNX Runtime) [default: int8 on the CPU].")
    options = [
        click.option("--model", type=click.Choice(list(MODELS)), help=f"Embedding model (README, \"Models\") {model_default}; "
                     "facenet with other --weights."),
        click.option("--weights", help=f"FaceNet's weights: {weights_help} {weights_default}"),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
        click.option("--runtime", type=click.Choice(RUNTIMES), help=runtime_help),
        click.option("--precision", type=click.Choice(PRECISIONS), help=precision_help),
    ]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def scan_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--scheduler", metavar="ADDRESS", help="Use an existing Dask cluster (tcp://host:8786)."),
        click.option("--workers", type=int, help="Local worker processes [default: one per core / threads]."),
        click.option("--threads-per-worker", type=int, default=1, show_default=True, help="Model threads (ONNX Runtime or torch) per local worker."),
        click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True, help="Faces per forward pass."),
        click.option("--shard-size", type=int, help="Photos per shard [default: up to 256, fewer toward the end of a scan]."),
        click.option("--detect-size", type=int, default=DEFAULT_DETECT_MAX_SIDE, show_default=True,
                     help="Longest side of the copy faces are detected on."),
        click.option("--min-face", type=int, default=DEFAULT_MIN_FACE, show_default=True, help="Smallest face kept (pixels)."),
        click.option("--min-score", type=float, default=DEFAULT_MIN_SCORE, show_default=True,
                     help="Lowest detection score kept."),
        click.option("--find-rotated", is_flag=True, help="Look again at photos with no face turned a quarter each "
                     "way (sideways scans and photos with no orientation tag)."),
        model_options("casia-webface (offline), vggface2 (downloads) or a state-dict FILE.pt.", model_of_library=True),
        click.option("--include", multiple=True, metavar="GLOB", help="Only photos matching GLOB (repeatable)."),
        click.option("--exclude", multiple=True, metavar="GLOB", help="Skip photos matching GLOB (repeatable)."),
        click.option("--force", is_flag=True, help="Run the models again on every photo, even unchanged ones."),
        click.option("--no-videos", is_flag=True, help="Leave videos (mp4, mov, m4v, avi, mkv, 3gp) out."),
        click.option("--retry-errors", is_flag=True, help="Try again photos that failed last time though unchanged."),
        click.option("--strict", is_flag=True, help="Exit 1 when any photo failed."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary; errors only."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _scan_config(library: Any, folders: tuple[str, ...], options: dict[str, Any]) -> ScanConfig:
    return ScanConfig(
        roots=folders,
        library=library.root,
        weights=options["weights"],
        model=options["model"],
        detection=DetectionSettings(max_side=options["detect_size"], min_face=options["min_face"],
                                    find_rotated=options["find_rotated"],
                                    min_score=options["min_score"]),
        batch_size=options["batch_size"],
        shard_size=options["shard_size"],
        workers=options["workers"],
        threads_per_worker=options["threads_per_worker"],
        scheduler=options["scheduler"],
        device=options["device"],
        include=options["include"],
        exclude=options["exclude"],
        force=options["force"],
        retry_errors=options["retry_errors"],
        videos=not options["no_videos"],
        models=ModelSettings.choose(options["runtime"], options["precision"], options["device"]),
    )


def _run_scan(config: ScanConfig, quiet: bool, to_stderr: bool = False) -> Any:
    from facebatch.progress import ProgressBar
    from facebatch.scan.driver import scan as run_scan

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if quiet:
        MODELS_LOG.setLevel(logging.WARNING)
    bar = ProgressBar(enabled=False if quiet else None)
    try:
        summary = run_scan(config, progress=bar)
    finally:
        bar.close()
    if not quiet:
        for warning in summary.warnings:
            click.echo(f"warning: {warning}", err=True)
        click.echo(summary.line(), err=to_stderr)
    return summary


@cli.command(short_help="Detect and embed every face under photo folders.")
@click.argument("folders", nargs=-1, required=True, type=click.Path())
@scan_options
@with_library
def scan(library: Any, folders: tuple[str, ...], strict: bool, quiet: bool, **options: Any) -> None:
    """Detect and embed every face under FOLDERS into the library's Parquet tables.

    Re-running only looks at new and changed photos; a killed scan resumes where it stopped.

    \b
    Example:
        facebatch scan ~/Pictures
        facebatch scan /photos --exclude '*/trash/*' --scheduler tcp://10.0.0.5:8786
    """
    summary = _run_scan(_scan_config(library, folders, options), quiet)
    if strict and summary.failed:
        sys.exit(1)


@cli.command(short_help="The whole job: scan, cluster, export tags, write the site.")
@click.argument("folders", nargs=-1, required=True, type=click.Path())
@scan_options
@click.option("--tags", "tags_file", default=None, help="Where the tags go, - for standard output [default: LIBRARY/tags.json].")
@click.option("--format", "fmt", type=click.Choice(["json", "jsonl", "parquet"]), default=None,
              help="Of the tags [default: from the file name; jsonl for -].")
@click.option("--no-report", is_flag=True, help="Skip the review site.")
@with_library
def run(library: Any, folders: tuple[str, ...], strict: bool, quiet: bool, tags_file: str | None, fmt: str | None,
        no_report: bool, **options: Any) -> None:
    """Bring the library up to date with FOLDERS and say where the results are: scan the new and
    changed photos, cluster every face (names given before flow to the new photos), export the
    per-photo tags and write the review site.

    \b
    Example:
        facebatch run ~/Pictures
        facebatch --library /nas/faces run /nas/photos --tags /nas/faces/tags.jsonl --quiet
    """
    from facebatch.exports.tags import format_for
    from facebatch.files import STDOUT, resolve_output
    from facebatch.models.scale import NAME_CONFIDENCE
    from facebatch.people.grouping import GroupingSettings
    from facebatch.review.report import write_report

    output = tags_file or str(library.root / "tags.json")
    if tags_file:  # a typo in the tags' path is said before hours of scanning, not after
        fmt = format_for(output, fmt)
        resolve_output(output)
    to_stderr = output == STDOUT  # the tags own standard output
    summary = _run_scan(_scan_config(library, folders, options), quiet, to_stderr)
    if not library.read_faces(["face_id"]).num_rows:
        raise InputError(f"no faces found in {', '.join(folders)}: nothing to cluster")
    unnamed = _cluster(library, GroupingSettings(), quiet, to_stderr)
    exported = _export(library, output, fmt, False, NAME_CONFIDENCE)
    click.echo(f"tags: {exported.line(output)}", err=to_stderr)
    if not no_report:
        from facebatch.progress import ProgressBar

        bar = ProgressBar(enabled=False if quiet else None, unit="thumbnails")
        try:
            index = write_report(library, None, bar)
        finally:
            bar.close()
        click.echo(f"site: {index}", err=to_stderr)
    if unnamed and not quiet:
        click.echo(f"next: name people with `facebatch label cluster N NAME` ({counted(unnamed, 'cluster')} unnamed: "
                   "numbers in `facebatch clusters` or the site), then run again", err=to_stderr)
    if strict and summary.failed:
        sys.exit(1)


@cli.command(short_help="Check that every table is readable and whole; --repair mends.")
@click.option("--repair", is_flag=True, help="Set damaged parts aside, restore labels from a generation, reconcile.")
@with_library
def check(library: Any, repair: bool) -> None:
    """Read every table of the library in full and say what is damaged, one line each; with
    --repair, mend it (nothing is deleted: damaged files move to LIBRARY/damaged/).

    Exit 0 when the library is whole (or was mended), 2 when something is damaged.

    \b
    Example:
        facebatch check
        facebatch check --repair && facebatch scan ~/Pictures
    """
    from facebatch.check import check_library

    report = check_library(library, repair)
    for line in report.lines(library.root):
        click.echo(line)
    if not report.healthy:
        sys.exit(EXIT_CODES[LibraryDamaged])


@cli.command(short_help="List the files a scan could not use, with why.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(ERROR_KINDS), help="Only this kind (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file and line.")
@with_library
def errors(library: Any, kinds: tuple[str, ...], as_json: bool) -> None:
    """List every file whose latest scan failed: its path, the kind of failure and the message, by
    path; a file fixed since (and scanned again) or gone is not listed.

    \b
    Example:
        facebatch errors
        facebatch errors --kind truncated --json
    """
    import json

    if not library.exists():
        raise LibraryMissing(library.root)
    failed = [f for f in library.failed_photos() if not kinds or f.kind in kinds]
    for photo in failed:
        click.echo(json.dumps({"path": photo.path, "kind": photo.kind, "error": photo.message}, ensure_ascii=False)
                   if as_json else f"{photo.path}\t{photo.kind}\t{photo.message}")
    if not as_json:
        by_kind = Counter(f.kind for f in failed)
        click.echo(f"{counted(len(failed), 'photo')} failed" + (": " + ", ".join(
            f"{kind} {n}" for kind, n in sorted(by_kind.items())) if failed else "") + (
            "; `facebatch scan --retry-errors` reads them again" if failed else ""))


# --------------------------------------------------------------------------- people


def cluster_options(command: Callable[..., Any]) -> Callable[..., Any]:
    from facebatch.people.grouping import (
        DEFAULT_METHOD,
        DEFAULT_MEMBER_SPREAD,
        DEFAULT_MIN_CLUSTER_SIZE,
        DEFAULT_MIN_FACE_SIZE,
        DEFAULT_MIN_SAMPLES,
        DEFAULT_PCA_DIMS,
    )

    options = [
        click.option("--min-cluster-size", type=int, default=DEFAULT_MIN_CLUSTER_SIZE, show_default=True,
                     help="Smallest group of faces that is a cluster."),
        click.option("--min-samples", type=int, default=DEFAULT_MIN_SAMPLES, show_default=True,
                     help="HDBSCAN min_samples: higher leaves more faces out."),
        click.option("--method", type=click.Choice(["eom", "leaf"]), default=DEFAULT_METHOD, show_default=True,
                     help="HDBSCAN cluster selection."),
        click.option("--member-distance", type=float, help="A face farther than this from its cluster's centre is not "
                     "a member [default: the model's; FaceNet's 0.9]."),
        click.option("--merge-distance", type=float, help="Clusters whose centres are closer than this are one "
                     "person [default: the model's; FaceNet's 0.75]."),
        click.option("--member-spread", type=float, default=DEFAULT_MEMBER_SPREAD, show_default=True,
                     help="A face farther from its cluster's centre than this times the 90th percentile of the "
                     "cluster's own faces' distances is not a member (clusters of 5 faces or more)."),
        click.option("--pca-dims", type=int, default=DEFAULT_PCA_DIMS, show_default=True,
                     help="Dimensions HDBSCAN works in on big libraries; 0: all of the model's."),
        click.option("--min-face-size", type=float, default=DEFAULT_MIN_FACE_SIZE, show_default=True,
                     help="Leave faces smaller than this (pixels, shorter side) unclustered."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _cluster(library: Any, settings: Any, quiet: bool = False, to_stderr: bool = False) -> int:
    """Cluster and say how it went; returns how many clusters (ignored ones aside) have no name."""
    from facebatch.people.clustering import cluster_library
    from facebatch.people.view import build_view

    summary = cluster_library(library, settings)
    view = build_view(library)
    named = sum(1 for c in view.clusters.values() if c.person)
    if not quiet:
        click.echo(summary.line() + f"; {named} named", err=to_stderr)
    for info in view.clusters.values():
        if info.conflict:
            click.echo("conflict: " + info.conflict_line(), err=to_stderr)
    return sum(1 for c in view.clusters.values() if not c.person and not c.ignored)


@cli.command(short_help="Group the faces into people.")
@cluster_options
@with_library
def cluster(library: Any, **options: Any) -> None:
    """Group every face in the library by person.

    Clusters that are the same group of faces as last time keep their number; names, "not",
    merges, splits and ignores given before are applied again. No photo is opened.

    \b
    Example:
        facebatch cluster
        facebatch scan ~/Pictures/2024 && facebatch cluster
    """
    from facebatch.people.grouping import GroupingSettings

    _cluster(library, GroupingSettings(**options))


def _shown_path(path: str, roots: list[str]) -> str:
    """A photo's path relative to the outermost scanned folder that holds it."""
    for root in roots:
        if path.startswith(root.rstrip(os.sep) + os.sep):
            return os.path.relpath(path, root)
    return path


def _fit(text: str, width: int | None) -> str:
    """One line cut to the terminal's width; whole when written to a file or pipe (width None)."""
    return text if width is None or len(text) <= width else text[: max(0, width - 1)] + "…"


def _terminal_width() -> int | None:
    return shutil.get_terminal_size((100, 24)).columns if sys.stdout.isatty() else None


@cli.command(name="clusters", short_help="List clusters and the ones that may be one person.")
@click.option("--limit", type=int, default=50, show_default=True, help="Show at most this many clusters (0: all).")
@click.option("--examples", type=int, default=3, show_default=True, help="Example photos per cluster.")
@click.option("--similar", is_flag=True, help="List pairs of clusters that may be one person, nearest first "
              "(never one that `verify` would call two people).")
@with_library
def list_clusters(library: Any, limit: int, examples: int, similar: bool) -> None:
    """List clusters, biggest first: number, size, person (or unnamed), example photos, and for an
    unnamed cluster the named or bigger cluster it may be.

    \b
    Example:
        facebatch clusters
        facebatch clusters --limit 0 --examples 1
        facebatch clusters --similar
    """
    import numpy as np

    from facebatch.people.view import build_view

    view = build_view(library)
    width = _terminal_width()
    if similar:
        _list_similar(view, limit, width)
        return
    faces = library.read_faces(["face_id", "path"])
    roots = library.scanned_roots()
    path_of = dict(zip(faces["face_id"].to_pylist(), faces["path"].to_pylist()))
    order = sorted(view.clusters.values(), key=lambda c: (-c.size, c.cluster_id))
    shown = order if limit <= 0 else order[:limit]
    # One sort instead of a scan per cluster: clusters x faces is 10^9 at 100,000 faces.
    by_cluster = np.lexsort((np.nan_to_num(view.distance, nan=9.0), view.cluster_ids))
    starts = np.searchsorted(view.cluster_ids[by_cluster], [info.cluster_id for info in shown])
    for info, start in zip(shown, starts.tolist()):
        members = view.face_ids[by_cluster[start:start + info.size]]
        best = [_shown_path(path_of[f], roots) for f in members if f in path_of]
        what = "ignored" if info.ignored else (info.person or "unnamed")
        if info.conflict:
            what += " (conflict)"
        head = f"{info.cluster_id:>6}  {counted(info.size, 'face'):>11}  {what}"
        click.echo(_fit(head + "  " + "  ".join(best[:examples]), width))
        if info.suggestion:
            other = view.clusters[info.suggestion.cluster_id]
            click.echo(_fit(f"{'':>8}same person as {other.person or f'cluster {other.cluster_id}'}? distance "
                            f"{info.suggestion.distance:.3f}: `facebatch merge {other.cluster_id} {info.cluster_id}`",
                            width))
    unclustered = int((view.cluster_ids < 0).sum())
    hidden = len(order) - len(shown)
    click.echo(f"{counted(len(order), 'cluster')}{f' ({hidden} not shown)' if hidden else ''}, "
               f"{counted(unclustered, 'unclustered face')}")
    for info in order:
        if info.conflict:
            click.echo("conflict: " + info.conflict_line())


def _list_similar(view: Any, limit: int, width: int | None) -> None:
    pairs = view.similar_pairs()
    shown = pairs if limit <= 0 else pairs[:limit]

    def who(c: int) -> str:
        info = view.clusters[c]
        return f"{c} ({info.person or 'unnamed'}, {counted(info.size, 'face')})"

    for pair in shown:
        click.echo(_fit(f"{pair.distance:.3f}  confidence {pair.confidence:.2f}  {who(pair.a)}  {who(pair.b)}  "
                        f"`facebatch merge {pair.a} {pair.b}`", width))
    hidden = len(pairs) - len(shown)
    click.echo(f"{counted(len(pairs), 'pair')}{f' ({hidden} not shown)' if hidden else ''} within verify's threshold "
               f"({view.scale.verify_threshold:.3f})")


@cli.group(short_help="Name a cluster or faces, or say a face is not someone.")
@library_group
def label() -> None:
    """Name a cluster or faces; say that a face is not someone.

    \b
    Example:
        facebatch label cluster 12 Alice
        facebatch label face 3f2a9c0d1e4b5a67 Bob
        facebatch label face 3f2a9c0d1e4b5a67 --not Alice
    """


@label.command(name="cluster")
@click.argument("cluster_id", type=int)
@click.argument("name")
@with_library
def label_cluster_command(library: Any, cluster_id: int, name: str) -> None:
    """Give NAME to every face of cluster CLUSTER_ID (faces labelled one by one keep their label).

    \b
    Example:
        facebatch label cluster 12 Alice
        facebatch label cluster 7 "Zoë van der Berg"
    """
    from facebatch.people.actions import label_cluster

    result = label_cluster(library, cluster_id, name)
    line = f"cluster {cluster_id} is {result.name}: {counted(result.faces, 'face')}"
    if result.kept_own:
        line += f"; {result.kept_own} keep their own face label"
    if result.replaced_imported:
        line += f"; {result.replaced_imported} named otherwise by a sidecar (import-xmp) take {result.name}"
    if result.refused:
        line += f"; {result.refused} left out (labelled not {result.name})"
    click.echo(line)
    if result.waiting:
        click.echo(f"{counted(result.waiting, 'face')} at the cluster's edge wait for a look before they are "
                   f"{result.name}: `facebatch review`, then Queue")


@label.command(name="face")
@click.argument("face_ids", nargs=-1, required=True, metavar="FACE_ID... NAME")
@click.option("--not", "negative", is_flag=True, help="These faces are NOT NAME: never give them that name.")
@with_library
def label_face_command(library: Any, face_ids: tuple[str, ...], negative: bool) -> None:
    """Name faces (outranks their cluster's name), or with --not rule a name out for good.

    \b
    Example:
        facebatch label face 3f2a9c0d1e4b5a67 Bob
        facebatch label face 3f2a9c0d1e4b5a67 9e1d22aa0b4c7d10 --not Alice
    """
    from facebatch.people.actions import label_faces, reject_faces

    if len(face_ids) < 2:
        raise UsageError("give FACE_ID... and then NAME, e.g. `facebatch label face 3f2a9c0d1e4b5a67 Bob`")
    *faces, name = face_ids
    result = (reject_faces if negative else label_faces)(library, faces, name)
    subject = f"face {faces[0]}" if len(faces) == 1 else f"{len(faces)} faces"
    click.echo(f"{subject} {'are' if len(faces) > 1 else 'is'} {'not ' if negative else ''}{result.name}")


@cli.command(short_help="Say that clusters are the same person.")
@click.argument("cluster_ids", nargs=-1, required=True, type=int)
@with_library
def merge(library: Any, cluster_ids: tuple[int, ...]) -> None:
    """Say that clusters are the same person: they become the first number, now and after re-runs.

    \b
    Example:
        facebatch merge 12 31
    """
    from facebatch.people.actions import merge_clusters

    result = merge_clusters(library, list(cluster_ids))
    line = f"clusters {', '.join(map(str, result.clusters))} are now cluster {result.cluster_id}: {counted(result.size, 'face')}"
    if result.conflict:
        line += "\nconflict: " + result.conflict
    elif result.person:
        line += f", {result.person}"
    click.echo(line)


@cli.command(short_help="Split faces off their cluster: another person.")
@click.argument("face_ids", nargs=-1, required=True)
@with_library
def split(library: Any, face_ids: tuple[str, ...]) -> None:
    """Split faces off their cluster: they are one person, not the rest's, now and after re-runs.

    \b
    Example:
        facebatch split 3f2a9c0d1e4b5a67 9e1d22aa0b4c7d10
    """
    from facebatch.people.actions import split_faces

    result = split_faces(library, list(face_ids))
    click.echo(f"{counted(result.faces, 'face')} split off cluster {', '.join(map(str, result.clusters))} "
               f"into cluster {result.cluster_id}")


@cli.group(short_help="Mark a cluster of strangers: never named.")
@library_group
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
@with_library
def ignore_cluster_command(library: Any, cluster_id: int, undo: bool) -> None:
    """Ignore cluster CLUSTER_ID (remembered across re-clusters).

    \b
    Example:
        facebatch ignore cluster 7
    """
    from facebatch.people.actions import ignore_cluster

    result = ignore_cluster(library, cluster_id, undo)
    if result.kind == "unignore":
        click.echo(f"cluster {cluster_id} is no longer ignored")
    elif result.action == 0:
        click.echo(f"cluster {cluster_id} is already ignored")
    else:
        click.echo(f"cluster {cluster_id} ignored: its {counted(result.faces, 'face')} are never suggested or exported "
                   "as a person")


@cli.command(name="undo", short_help="Undo the last label, merge, split or ignore.")
@with_library
def undo_command(library: Any) -> None:
    """Undo the last label, merge, split or ignore (repeat to go further back).

    Nothing is deleted: the undo is a new entry in the labels history.

    \b
    Example:
        facebatch undo
    """
    from facebatch.people.actions import undo

    result = undo(library)
    click.echo(f"undid {result.undone.text()}")


@cli.command(short_help="List named people with their faces and photos.")
@with_library
def people(library: Any) -> None:
    """List named people: confirmed and suggested faces, photos, clusters.

    \b
    Example:
        facebatch people
    """
    from facebatch.people.suggestions import face_tags, people_summary

    library.require_clusters()
    found = people_summary(face_tags(library))
    for person in found:
        clusters = ", ".join(map(str, person.clusters)) or "-"
        click.echo(f"{person.name}\t{person.confirmed} confirmed, {counted(person.suggested, 'suggested face')}\t"
                   f"{counted(person.photos, 'photo')}\tclusters {clusters}")
    click.echo(counted(len(found), "person", "people"))


# --------------------------------------------------------------------------- exports


def _export(library: Any, output: str, fmt: str | None, only_named: bool, min_confidence: float) -> Any:
    from facebatch.exports.tags import ExportSettings, export_tags, format_for

    settings = ExportSettings(output=output, format=format_for(output, fmt), only_named=only_named,
                              min_confidence=min_confidence)
    library.require_clusters()
    return export_tags(library, settings)


@cli.command(name="export", short_help="Write per-photo tags (json, jsonl, parquet).")
@click.argument("output")
@click.option("--format", "fmt", type=click.Choice(["json", "jsonl", "parquet"]), default=None,
              help="[default: from the file name; jsonl for -]")
@click.option("--only-named", is_flag=True, help="Only faces with a person (and photos with one).")
@click.option("--min-confidence", type=float, default=None,
              help="Suggestions below this confidence are exported as unknown [default: 0.8, the naming cut].")
@with_library
def export_command(library: Any, output: str, fmt: str | None, only_named: bool, min_confidence: float | None) -> None:
    """Write per-photo tags to OUTPUT (a file, or - for standard output): every face with its box,
    person, status and confidence.

    \b
    Example:
        facebatch export tags.json
        facebatch export tags.parquet --only-named --min-confidence 0.9
        facebatch export - | jq .path
    """
    from facebatch.models.scale import NAME_CONFIDENCE

    summary = _export(library, output, fmt, only_named, NAME_CONFIDENCE if min_confidence is None else min_confidence)
    click.echo(summary.line(output), err=output == "-")


# --------------------------------------------------------------------------- XMP sidecars (issue 13)


@cli.command(name="export-xmp", short_help="Write named faces to XMP sidecars for other photo tools.")
@click.option("--dry-run", is_flag=True, help="Count the sidecars that would be created or changed; write nothing.")
@click.option("--only-confirmed/--include-suggested", "only_confirmed", default=True, show_default=True,
              help="Names the user gave only, or also suggested names (confidence >= 0.8).")
@click.option("--sidecar-name", type=click.Choice(["photo.jpg.xmp", "photo.xmp"]), default="photo.jpg.xmp",
              show_default=True, help="How new sidecars are named; an existing sidecar is always the one updated.")
@with_library
def export_xmp_command(library: Any, dry_run: bool, only_confirmed: bool, sidecar_name: str) -> None:
    """Write face regions (MWG and Microsoft) and people's names into each photo's XMP sidecar,
    where digiKam, Immich and other photo tools read them. Photos are never written
    to; in an existing sidecar only what facebatch wrote before changes.

    \b
    Example:
        facebatch export-xmp --dry-run
        facebatch export-xmp
        facebatch export-xmp --include-suggested --sidecar-name photo.xmp
    """
    from facebatch.exports.xmp import XmpExportSettings, export_xmp

    settings = XmpExportSettings(include_suggested=not only_confirmed, new_sidecar_name=sidecar_name, dry_run=dry_run)
    result = export_xmp(library, settings)
    for path, reason in result.skipped:
        click.echo(f"skipped {path}: {reason}")
    for path, ours, theirs in result.disagreements:
        click.echo(f"kept {path}: another tool names a face {theirs!r} that facebatch names {ours!r}")
    verb = ("would be created", "would change") if dry_run else ("created", "updated")
    click.echo(f"{result.created + result.updated + result.removed + result.unchanged} sidecars: {result.created} "
               f"{verb[0]}, {result.updated} {verb[1]}, {result.unchanged} unchanged"
               + (f", {result.removed} {'would be removed' if dry_run else 'removed'} (they held only facebatch's names)"
                  if result.removed else "")
               + f"; {result.regions} face regions"
               + (f", {result.left_to_others} already named by another tool" if result.left_to_others else "")
               + (f"; {len(result.skipped)} skipped" if result.skipped else "")
               + ("; nothing written (dry run)" if dry_run else ""))


@cli.command(name="import-xmp", short_help="Names from XMP face regions (sidecars, embedded) become labels.")
@click.argument("folders", nargs=-1, required=True, type=click.Path())
@with_library
def import_xmp_command(library: Any, folders: tuple[str, ...]) -> None:
    """Read the face regions other tools wrote (MWG and Microsoft, in sidecars and inside the
    photos) for the library's photos under FOLDERS, and name the faces they cover. A name given
    in facebatch is never overwritten: a different one is reported.

    \b
    Example:
        facebatch import-xmp ~/Pictures
    """
    from facebatch.exports.xmp_import import import_xmp

    result = import_xmp(library, list(folders))
    for path, reason in result.skipped:
        click.echo(f"skipped {path}: {reason}")
    for region in result.unmatched:
        b = region.box
        click.echo(f"no face for {region.name!r} in {region.photo} ({region.origin}) "
                   f"at {b.x1:.3f},{b.y1:.3f},{b.x2:.3f},{b.y2:.3f}")
    for path, face_id, names in result.disputed:
        click.echo(f"not named: face {face_id} in {path} has regions named {', '.join(map(repr, names))}")
    for path, face_id, offered, kept in result.conflicts:
        click.echo(f"conflict: face {face_id} in {path} is {kept!r} in facebatch, {offered!r} in XMP (kept {kept!r}; "
                   f"`facebatch label face {face_id} {shlex.quote(offered)}` takes the XMP's)")
    click.echo(f"{result.photos} photos, {result.photos_with_regions} with named face regions: {result.regions} regions, "
               f"{result.matched} on a face, {len(result.unmatched)} on no face; {result.named} faces named, "
               f"{result.unchanged} already named so, {len(result.conflicts)} conflicts"
               + (f", {len(result.disputed)} disputed" if result.disputed else "")
               + (f"; {result.guesses} facebatch suggestions not imported" if result.guesses else "")
               + (f"; {result.other_regions} other regions (unnamed, pets, points) passed over" if result.other_regions else "")
               + (f"; {len(result.skipped)} skipped" if result.skipped else ""))


# --------------------------------------------------------------------------- training (issue 14)


@cli.command(name="train", short_help="Learn from your names: an adapter that tells your people apart.")
@click.option("--evaluate", is_flag=True, help="Only measure what an adapter would gain; change nothing.")
@click.option("--off", is_flag=True, help="Back to the plain embeddings (the adapter stays on disk).")
@click.option("--loss", type=click.Choice(["triplet", "am-softmax"]), default="triplet", show_default=True,
              help="Training loss.")
@click.option("--steps", type=click.IntRange(min=1), default=400, show_default=True, help="Training steps.")
@with_library
def train_command(library: Any, evaluate: bool, off: bool, loss: str, steps: int) -> None:
    """Learn an adapter on top of the face embeddings from the names you gave and your "not"
    labels, check it on names held back, and use it (clusters made again) only when it loses on
    nothing: suggestion precision and recall, clustering, false suggestions on people it never saw.

    No photo is opened; the scan tables and your labels are never changed.

    \b
    Example:
        facebatch train
        facebatch train --evaluate
        facebatch train --off
    """
    from facebatch.people.adapter import CHECKS, adapter_off, train_adapter
    from facebatch.people.training import TrainingSettings

    if off:
        if evaluate:
            raise UsageError("--off and --evaluate can't be combined")
        result = adapter_off(library)
        state = "switched off" if result.was_active else "was already off"
        click.echo(f"adapter {result.adapter_id} {state}: clusters, suggestions and identify use the plain embeddings")
        _echo_reclustered(result.reclustered)
        return
    report = train_adapter(library, TrainingSettings(loss=loss, steps=steps), evaluate_only=evaluate)
    click.echo(f"{report.people} people, {report.faces} confirmed faces, {report.not_faces} faces known not to be "
               f"someone, {report.background} background faces; {loss} loss, {steps} steps")
    click.echo(f"check, {report.folds} folds: {report.held_back} faces held back of the people trained on; "
               f"{report.held_out_people} people held out whole and background faces: {report.plain.strangers} faces "
               "of nobody named")
    click.echo(f"{'':<32}{'plain':>10}{'adapted':>10}")
    for label, value, _ in CHECKS:
        shown = [f"{value(f)}/{f.strangers}" if isinstance(value(f), int) else f"{value(f):.3f}"
                 for f in (report.plain, report.adapted)]
        click.echo(f"{label:<32}{shown[0]:>10}{shown[1]:>10}")
    if report.losses:
        verdict = f"loses on {', '.join(report.losses)}"
    elif not report.gains:
        verdict = "gains on nothing"
    else:
        verdict = f"gains on {', '.join(report.gains)}, loses on nothing"
    if report.activated:
        click.echo(f"adapter {report.adapter_id} {verdict}: trained again on every name and activated "
                   f"({report.seconds:.1f}s); `facebatch train --off` goes back")
        _echo_reclustered(report.reclustered)
    elif report.evaluate_only:
        click.echo(f"an adapter {verdict}: `facebatch train` would {'activate' if report.passed else 'refuse'} it "
                   f"({report.seconds:.1f}s); nothing changed")
    else:
        click.echo(f"not activated: the adapter {verdict} ({report.seconds:.1f}s); nothing changed")


def _echo_reclustered(summary: Any) -> None:
    if summary is not None:
        click.echo("clustered again: " + summary.line())


# --------------------------------------------------------------------------- quality


@cli.group("eval", short_help="Measure verification and clustering quality.")
@library_group
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
@model_options()
@click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True, help="Faces per forward pass.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def eval_pairs(
    pairs_csv: str, root: str, flip: bool, n_folds: int, model: str, weights: str, device: str, runtime: str | None,
    precision: str | None, batch_size: int, as_json: bool, quiet: bool,
) -> None:
    """Verification accuracy on labelled pairs of photos (the LFW protocol).

    PAIRS_CSV rows are `path1,path2,same[,fold]` (same: 1/0); with a header row the columns are
    found by name. Each fold's threshold is chosen on the other folds; without a fold column pair i
    goes to fold i % --folds. The face compared is the one nearest the photo's centre; a pair with
    a photo where no face is found counts as wrong and is listed.

    \b
    Example:
        facebatch eval pairs pairs.csv --root ~/datasets/lfw --flip
        facebatch eval pairs pairs.csv --json > lfw.json
    """
    from facebatch.people.verification import build_pipeline, evaluate_pairs, read_pairs
    from facebatch.progress import ProgressBar

    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    root_path = Path(root).expanduser()
    pairs = read_pairs(Path(pairs_csv), root_path)
    pipeline = build_pipeline(weights or DEFAULT_WEIGHTS, device, batch_size,
                              models=ModelSettings.choose(runtime, precision, device, model_for(model, weights)))
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


@eval_group.command("clusters")
@click.argument("truth_csv", type=click.Path(dir_okay=False))
@click.option("--root", type=click.Path(file_okay=False), default=".", show_default=True, help="Folder the CSV's paths are relative to.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@with_library
def eval_clusters(library: Any, truth_csv: str, root: str, as_json: bool) -> None:
    """Quality of the library's current clustering against true identities.

    TRUTH_CSV rows are `path,identity` (an optional header row; extra columns are ignored when the
    header names `path` and `identity`). Each photo labels its face nearest the centre; a group
    photo's `a;b` identity names several people and is left out (its faces are still clustered).
    Reports pairwise and BCubed precision/recall/F (unclustered faces count as clusters of one),
    coverage (share of labelled faces in a cluster) and clusters found vs identities.

    \b
    Example:
        facebatch cluster && facebatch eval clusters truth.csv --root ~/Pictures
        facebatch eval clusters lfw/manifest.csv --root lfw/images --json
    """
    from facebatch.people.clustering import read_assignments
    from facebatch.people.evaluation import evaluate_library_clusters, read_truth

    truth = read_truth(Path(truth_csv))
    library.require_clusters()
    result = evaluate_library_clusters(library, truth, Path(root).expanduser(), read_assignments(library))
    if as_json:
        _echo_json(result.to_json())
    else:
        for line in result.lines():
            click.echo(line)


@cli.command(short_help="Remove a person, faces or photos from the library for good.")
@click.argument("name", required=False)
@click.option("--face", "face_ids", multiple=True, metavar="FACE_ID", help="A face to forget (repeatable).")
@click.option("--photo", "photo_paths", multiple=True, metavar="PATH", help="Every face of this photo (repeatable).")
@click.option("--with-suggested", is_flag=True, help="With NAME: also the faces only suggested as NAME (a guess).")
@click.option("--yes", is_flag=True, help="Do not ask: forget is for good, there is no undo.")
@with_library
def forget(library: Any, name: str | None, face_ids: tuple[str, ...], photo_paths: tuple[str, ...],
           with_suggested: bool, yes: bool) -> None:
    """Remove a person (NAME), faces or photos' faces from the library for good: embeddings,
    labels (and their kept generations), clusters, thumbnails, the report and contact sheets, the
    adapter when it learned from them, and the regions and names facebatch wrote into XMP
    sidecars. Each face leaves a tombstone (id, photo, path, box; no embedding, no name) so that no
    re-scan embeds it again. `facebatch check` finds a forget cut short; --repair finishes it.

    \b
    Example:
        facebatch forget "Alice Moe"
        facebatch forget --face 3f2a9c0d1e4b5a67
        facebatch forget --photo ~/Pictures/2019/party.jpg --yes
    """
    from facebatch.forget import faces_of_person, faces_of_photos, forget as forget_faces, known_faces
    from facebatch.people.labels import clean_name

    if not (name or face_ids or photo_paths):
        raise UsageError("say what to forget: a NAME, --face FACE_ID or --photo PATH")
    library.require()
    names = {clean_name(name)} if name else set()
    faces, kept_suggested = set(), 0
    if name:
        person = faces_of_person(library, name)
        faces |= person.confirmed | (person.suggested if with_suggested else set())
        kept_suggested = 0 if with_suggested else len(person.suggested)
    if face_ids:
        faces |= known_faces(library, list(face_ids))
    if photo_paths:
        faces |= faces_of_photos(library, list(photo_paths))
    what = " and ".join(filter(None, [name, counted(len(face_ids), "face") if face_ids else "",
                                      counted(len(photo_paths), "photo") if photo_paths else ""]))
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("forget removes for good, with no undo: add --yes to confirm")
        if not click.confirm(f"Forget {what} ({counted(len(faces), 'face')}) for good? There is no undo"):
            click.echo("nothing forgotten")
            return
    result = forget_faces(library, faces, names)
    click.echo(f"forgot {what}: {counted(result.faces, 'face')} (embeddings and boxes), "
               f"{counted(result.labels, 'label')}, {counted(result.thumbnails, 'thumbnail')}, "
               f"regions in {counted(result.sidecars, 'sidecar')}")
    if kept_suggested:
        they = "it" if kept_suggested == 1 else "them"
        click.echo(f"{counted(kept_suggested, 'face')} only suggested as {name} (a guess, maybe someone else) "
                   f"{'stays' if kept_suggested == 1 else 'stay'}, with no name now: --with-suggested forgets {they} too")
    for folder in result.derived:
        click.echo(f"removed {library.root / folder}: it showed these faces (`facebatch {'report' if folder == 'report' else 'show'}` "
                   "writes it again)")
    if result.adapter:
        click.echo("removed the adapter: it learned from these labels (`facebatch train` learns a new one)")
    if result.set_aside:
        click.echo(f"{library.damaged_dir} holds {counted(result.set_aside, 'file')} set aside as damaged, which "
                   "may hold them too: delete it when you no longer need it")
    for sidecar, why in result.sidecar_errors:
        click.echo(f"sidecar {sidecar} still holds them: {why}", err=True)
    if result.faces:
        click.echo("each face is kept as a tombstone (id, photo, path, box) so no re-scan embeds it again; "
                   "`facebatch check` finds anything of them left in the tables or thumbnails")


# --------------------------------------------------------------------------- the review site


@cli.command(short_help="Write the static review site of every cluster.")
@click.option("--out", type=click.Path(), help="Site folder [default: LIBRARY/report].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar; print only the index path.")
@with_library
def report(library: Any, out: str | None, quiet: bool) -> None:
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
        index = write_report(library, Path(out) if out else None, bar)
    finally:
        bar.close()
    click.echo(index)


@cli.command(short_help="Name, merge, split and reject people in the browser.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; another than this "
              "machine's loopback lets others on the network change the library.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True, help="Port to listen on.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default browser.")
@with_library
def review(library: Any, host: str, port: int, open_browser: bool) -> None:
    """Review the people in the browser: name clusters, reject or split off faces, merge, undo.

    Serves the review pages on this machine until Ctrl-C. Every click writes exactly what the
    matching command would (`label`, `merge`, `split`, `ignore`, `undo`), waiting for a scan that
    holds the library. Forms carry a token that only this server's pages have.

    \b
    Example:
        facebatch review
        facebatch review --port 9000 --open
    """
    import webbrowser

    from facebatch.review.server import listen, prepare, serve

    sock = listen(host, port)  # a port in use is said before the library is read
    state = prepare(library)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {host}: anyone who can reach it and open a page can change the names "
                   "in this library", err=True)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    address = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}/"
    click.echo(f"reviewing {library.root} at {address} (Ctrl-C stops)")
    if open_browser:
        webbrowser.open(address)
    try:
        serve(state, sock, host)
    except KeyboardInterrupt:  # Ctrl-C is how a review is stopped (uvicorn raises it again after closing)
        click.echo("review stopped")


@cli.group(short_help="Contact sheets of a cluster or a person.")
@library_group
def show() -> None:
    """Contact sheets: a grid of face crops, to see who a cluster or person is.

    \b
    Example:
        facebatch show cluster 12 -o c12.jpg
        facebatch show person Alice -o alice.png
    """


def _contact_sheet(library: Any, pick: Callable[[Any], list], title: str, out: str | None, stem: str) -> None:
    """Write the sheet to `out`, or to LIBRARY/sheets/STEM.jpg when no -o is given."""
    import re

    from facebatch.review.pages import collect
    from facebatch.review.sheets import write_contact_sheet

    if not library.exists():
        raise LibraryMissing(library.root)
    if out is None:
        folder = library.root / "sheets"
        folder.mkdir(parents=True, exist_ok=True)
        out = str(folder / (re.sub(r"[^\w.-]+", "-", stem).strip("-.") + ".jpg"))
    click.echo(write_contact_sheet(library, pick(collect(library)), title, out))


@show.command(name="cluster")
@click.argument("cluster_id", type=int)
@click.option("-o", "--output", help="Image file (.jpg or .png) [default: LIBRARY/sheets/cluster-N.jpg].")
@with_library
def show_cluster(library: Any, cluster_id: int, output: str | None) -> None:
    """Write a contact sheet of cluster CLUSTER_ID's faces and print its path.

    \b
    Example:
        facebatch show cluster 12
        facebatch show cluster 12 -o c12.png
    """
    from facebatch.review.sheets import faces_of_cluster

    _contact_sheet(library, lambda site: faces_of_cluster(site, cluster_id), f"Cluster {cluster_id}", output,
                   f"cluster-{cluster_id}")


@show.command(name="person")
@click.argument("name")
@click.option("-o", "--output", help="Image file (.jpg or .png) [default: LIBRARY/sheets/person-NAME.jpg].")
@with_library
def show_person(library: Any, name: str, output: str | None) -> None:
    """Write a contact sheet of NAME's faces (confirmed and suggested) and print its path.

    \b
    Example:
        facebatch show person "Grace Hopper"
        facebatch show person "Grace Hopper" -o grace.png
    """
    from facebatch.review.sheets import faces_of_person

    _contact_sheet(library, lambda site: faces_of_person(site, name), name, output, f"person-{name}")


# --------------------------------------------------------------------------- one photo against the library


@cli.command(short_help="Are two photos of the same person?")
@click.argument("photo_a", type=click.Path(dir_okay=False))
@click.argument("photo_b", type=click.Path(dir_okay=False))
@click.option("--face", "face_index", type=click.IntRange(min=0), multiple=True, metavar="N",
              help="Compare face N (0-based, best detection first) instead of the largest; "
              "once: both photos, twice: photo A then photo B.")
@click.option("--threshold", type=float, help="Distance at or below which it is the same person [default: the "
              "model's, the best 1:1 accuracy on LFW-style pairs; FaceNet's 1.108].")
@model_options()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(
    photo_a: str, photo_b: str, face_index: tuple[int, ...], threshold: float | None, model: str, weights: str,
    device: str, runtime: str | None, precision: str | None, as_json: bool,
) -> None:
    """Is the face in PHOTO_A the same person as the face in PHOTO_B?

    Compares the largest face of each photo, and says what the same distance would mean as a
    suggestion in a library. Exit status: 0 same person, 1 different people, 2 error (no face
    found, unreadable photo).

    \b
    Example:
        facebatch verify passport.jpg selfie.jpg
        facebatch verify group.jpg portrait.jpg --face 3 --face 0 --json
    """
    from facebatch.people.verification import EXIT_DIFFERENT, EXIT_ERROR, EXIT_SAME, build_pipeline
    from facebatch.people.verification import verify as run_verify

    try:
        if len(face_index) > 2:
            raise UsageError("--face is given at most twice (photo A, photo B)")
        faces = (face_index[0], face_index[-1]) if face_index else (None, None)
        pipeline = build_pipeline(weights or DEFAULT_WEIGHTS, device,
                                  models=ModelSettings.choose(runtime, precision, device, model_for(model, weights)))
        result = run_verify(pipeline, photo_a, photo_b, faces, threshold)
    except FacebatchError as error:
        _fail(str(error), EXIT_ERROR)
    if as_json:
        _echo_json({**result.to_json(), "model": pipeline.model})
    else:
        click.echo("\n".join([result.line(), *result.notes()]))
    sys.exit(EXIT_SAME if result.same else EXIT_DIFFERENT)


@cli.command(short_help="Who is in new photos, among the named people?")
@click.argument("photos", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="People listed per face.")
@click.option("--min-confidence", type=float, default=None, help="Lowest confidence that names a face [default: 0.8].")
@model_options(of_library=True, model_of_library=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per photo and line.")
@with_library
def identify(
    library: Any, photos: tuple[str, ...], top_k: int, min_confidence: float | None, model: str | None,
    weights: str | None, device: str, runtime: str | None, precision: str | None, as_json: bool,
) -> None:
    """Who is in PHOTOS (files or folders)? Each face with the best named person and a confidence.

    Faces are compared with the library's named people (the centre of each one's confirmed
    faces). The models are built once for all the photos. Exit 2 when no photo could be read.

    \b
    Example:
        facebatch identify new-photo.jpg
        facebatch identify ~/Downloads/party --json > who.jsonl
    """
    import json

    from facebatch.models.scale import NAME_CONFIDENCE
    from facebatch.people.recognition import identify_photos, library_models
    from facebatch.people.verification import build_pipeline
    from facebatch.scan.discovery import discover

    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
        raise UsageError(f"--min-confidence must be between 0 and 1, got {min_confidence}")
    paths: list[str] = []  # in the order given, each folder's photos in its own order
    for given in photos:
        if Path(given).is_dir():
            paths += [p.path for p in discover([given], skip_dirs=[library.root]).photos]
        else:
            paths.append(given)  # a photo, or a missing or unreadable path: its own line says what is wrong
    if not paths:
        raise InputError(f"no photos in {', '.join(photos)}")
    recorded = library.model()
    pipeline = build_pipeline(weights or (recorded.weights if recorded else DEFAULT_WEIGHTS), device,
                              models=library_models(library, runtime, precision, device, model))
    read = 0
    for photo in identify_photos(library, pipeline, paths, top_k,
                                 NAME_CONFIDENCE if min_confidence is None else min_confidence):
        read += photo.error is None
        if as_json:
            click.echo(json.dumps(photo.to_json(), ensure_ascii=False))
        elif photo.error:  # the path once: a message that names it ("file not found: X") is enough
            click.echo(photo.error if photo.path in photo.error else f"{photo.path}: {photo.error}")
        elif not photo.faces:
            click.echo(f"{photo.path}: no face found")
        else:
            for face in photo.faces:
                click.echo(f"{photo.path}: {face.line()}")
    if not read:
        sys.exit(EXIT_CODES[InputError])


# What the models' first preparation says (models.onnx_models, models.weights): a new user's first
# command would otherwise sit silent for a minute.
MODELS_LOG = logging.getLogger("facebatch.models")


def main() -> None:
    """The console script: the CLI, then a quick exit."""
    try:
        cli_main()
    except SystemExit as done:
        _exit_now(done.code)
    _exit_now(0)


def cli_main() -> None:
    """The CLI as a command runs it: one-line errors and exit codes (SystemExit), the models' notices on stderr."""
    # After a `kill -9` multiprocessing's resource tracker (a process of its own, started with this
    # interpreter's -W options) reports the local Dask cluster's semaphores as leaked while it
    # cleans them up: nothing is left behind, and the next scan resumes, so the warning only alarms.
    if "ignore:resource_tracker:UserWarning" not in sys.warnoptions:
        sys.warnoptions.append("ignore:resource_tracker:UserWarning")
    if not MODELS_LOG.handlers:
        notices = logging.StreamHandler(sys.stderr)
        notices.setFormatter(logging.Formatter("%(message)s"))
        MODELS_LOG.addHandler(notices)
        MODELS_LOG.setLevel(logging.INFO)
    cli(prog_name="facebatch")


def _exit_now(code: Any) -> None:
    """End the process once the atexit handlers have run and the output is flushed, without the
    interpreter's teardown of every module: 0.2-0.3 s after a scan, spent on distributed's and
    pyarrow's objects. Nothing of ours is left to flush by then: every write is atomic and closed.
    A thread still running (the interpreter would wait for it) or a code that is not a number
    (click prints it) ends the usual way."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if others or not isinstance(code, int | None):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None: started with it closed (`>&-`)
            with contextlib.suppress(OSError, ValueError):  # a reader that has gone, a stream closed
                stream.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    main()
