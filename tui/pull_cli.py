"""`ctrdeck pull` and `ctrdeck images ...`: their options, and how they show bytes and digests.

Only the command line's shape lives here, so building the `ctrdeck` parser loads nothing
heavy; the commands themselves are `tui.image_commands`, imported when one of them runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def human(n: int) -> str:
    """Bytes as the console's tables show them (`1.5 KiB`, `23.0 MiB`)."""
    import humanize

    return humanize.naturalsize(n, binary=True, format="%.1f")


def add_parsers(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_globals: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add `pull` and `images` to the `ctrdeck` command; `add_globals` adds -a and -n."""
    add_pull_parser(sub, add_globals)
    add_images_parser(sub, add_globals)


def add_pull_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_globals: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add `pull` alone (as `tui.cli.parse` does for a `ctrdeck pull` command line)."""
    pull_parser = sub.add_parser("pull", help="pull an image through the engine, with progress")
    add_globals(pull_parser)
    pull_parser.add_argument("--snapshotter", help="snapshotter to unpack into")
    pull_parser.add_argument("--platform", help="platform to pull, e.g. linux/arm64")
    pull_parser.add_argument(
        "--all-platforms",
        action="store_true",
        help="fetch every platform's content (only --platform, or this host's, is unpacked)",
    )
    pull_parser.add_argument("--plain-http", action="store_true", help="talk HTTP, not HTTPS")
    pull_parser.add_argument("--skip-unpack", action="store_true", help="only fetch the blobs")
    pull_parser.add_argument(
        "--user",
        "-u",
        metavar="NAME[:PASSWORD]",
        help="registry credentials (asks for the password when it is left out; "
        "default: Docker's config.json)",
    )
    pull_parser.add_argument("ref", help="image reference, e.g. docker.io/library/alpine:3.20")


def add_images_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_globals: Callable[[argparse.ArgumentParser], None],
) -> None:
    images_parser = sub.add_parser("images", help="push, import, export, tag and remove images")
    add_globals(images_parser)
    isub = images_parser.add_subparsers(dest="images_command", required=True)

    push = isub.add_parser("push", help="push a local image to a registry")
    add_globals(push)
    push.add_argument("--platform", help="push only this platform's manifest")
    push.add_argument("--plain-http", action="store_true", help="talk HTTP, not HTTPS")
    push.add_argument(
        "--user",
        "-u",
        metavar="NAME[:PASSWORD]",
        help="registry credentials (asks for the password when it is left out; "
        "default: Docker's config.json)",
    )
    push.add_argument("name", help="local image name")
    push.add_argument("remote", nargs="?", help="remote reference (default: the image's name)")

    imp = isub.add_parser("import", help="import an OCI layout or docker-archive tarball")
    add_globals(imp)
    imp.add_argument("--base-name", help="repository for images named by tag only")
    imp.add_argument("--snapshotter", help="snapshotter to unpack into")
    imp.add_argument("--platform", help="platform to unpack (default: this host's)")
    imp.add_argument("--skip-unpack", action="store_true", help="only import the blobs")
    imp.add_argument("archive", type=Path, help="tarball to import ('-' for stdin)")

    exp = isub.add_parser("export", help="export images as an OCI layout tarball")
    add_globals(exp)
    exp.add_argument("--platform", help="only this platform's manifests")
    exp.add_argument("--skip-docker-manifest", action="store_true", help="leave out manifest.json")
    exp.add_argument("archive", type=Path, help="tarball to write ('-' for stdout)")
    exp.add_argument("names", nargs="+", help="images to export")

    tag = isub.add_parser("tag", help="give an image more names")
    add_globals(tag)
    tag.add_argument("--force", action="store_true", help="move a name that exists")
    tag.add_argument("source")
    tag.add_argument("targets", nargs="+")

    rm = isub.add_parser("rm", help="remove images")
    add_globals(rm)
    rm.add_argument("--sync", action="store_true", help="collect garbage before returning")
    rm.add_argument("names", nargs="+")
