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
    from facebatch.scan import scan as run_scan

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


def main() -> None:
    cli(prog_name="facebatch")


if __name__ == "__main__":
    main()
