"""Replace a folder atomically: write a staging sibling, fsync it, then swap it in by rename.

A process killed at any point, even by SIGKILL, leaves the target folder either as it was
before or fully replaced. On Linux the swap is one ``renameat2(RENAME_EXCHANGE)`` call. Where
that call is unavailable, the swap takes two renames, and a kill between them leaves the
previous folder at ``.<name>.previous-<pid>`` next to the target (see ``previous_versions``).

``atomic_file`` does the same for a single file, whose swap is always one ``os.replace``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = [
    "atomic_directory",
    "atomic_file",
    "fsync_directory",
    "fsync_file",
    "fsync_tree",
    "previous_versions",
    "remove_stale_staging",
    "swap_directories",
]

logger = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def staging_prefix(target: Path) -> str:
    """Return the name prefix of the staging folders of ``target``."""
    return f".{target.name}.tmp-"


def previous_prefix(target: Path) -> str:
    """Return the name prefix of the folders that keep ``target``'s previous version mid-swap."""
    return f".{target.name}.previous-"


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder and, when the block ends without error, swap it in as ``target``.

    The staging folder is a sibling of ``target`` on the same file system. Every file in it is
    fsynced before the swap. If the block raises, the staging folder is removed and ``target``
    is unchanged. Staging folders of dead processes are removed first.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = target.parent / f"{staging_prefix(target)}{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        yield staging
        fsync_tree(staging)
        swap_directories(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike[str], encoding: str = "utf-8") -> Iterator[TextIO]:
    """Yield a text file open for writing and, when the block ends without error, move it to ``target``.

    The file is a hidden sibling of ``target``, so the rename stays on one file system and
    replaces any previous ``target`` in one step, keeping its permissions. It is fsynced before
    the rename. If the block raises, the file is removed and ``target`` is unchanged. Staging
    files of dead processes are removed first.
    """
    # Resolving symbolic links replaces the file that a link points to, not the link itself.
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = target.parent / f"{staging_prefix(target)}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        # Mode "x" creates the file with the permissions of an ordinary new file.
        with open(staging, "x", encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            # A write in place would keep the permissions of the previous file.
            shutil.copymode(target, staging)
        os.replace(staging, target)
        fsync_directory(target.parent)
    finally:
        staging.unlink(missing_ok=True)


def swap_directories(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``, replacing any previous ``target``, and delete the old one."""
    if not target.exists():
        os.rename(staging, target)
        fsync_directory(target.parent)
        return

    if exchange_paths(staging, target):
        # ``staging`` now contains the previous version.
        fsync_directory(target.parent)
        shutil.rmtree(staging)
        return

    previous = target.parent / f"{previous_prefix(target)}{os.getpid()}"
    os.rename(target, previous)
    os.rename(staging, target)
    fsync_directory(target.parent)
    shutil.rmtree(previous)


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two paths with one ``renameat2(RENAME_EXCHANGE)`` call.

    Returns False when the C library or the file system does not support the call.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"renameat2 failed to swap {first} and {second}: {os.strerror(code)}")


def remove_stale_staging(target: Path) -> None:
    """Remove staging folders and files of ``target`` whose writing process is no longer running."""
    # NOTE: liveness is checked by process id on this machine, so a staging folder written
    # by another host on a shared file system is removed even if that host is still writing.
    if not target.parent.is_dir():
        return
    prefix = staging_prefix(target)
    for entry in target.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        pid_text = entry.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and not process_is_running(int(pid_text)):
            logger.info("removing staging copy %s left by stopped process %s", entry, pid_text)
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def previous_versions(target: str | os.PathLike[str]) -> list[Path]:
    """Return the folders that keep a previous version of ``target`` after an interrupted swap."""
    target = Path(target).absolute()
    if not target.parent.is_dir():
        return []
    prefix = previous_prefix(target)
    return sorted(p for p in target.parent.iterdir() if p.name.startswith(prefix))


def process_is_running(pid: int) -> bool:
    """Return True when a process with id ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_file(path: Path) -> None:
    """Flush a file's data and metadata to disk."""
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def fsync_directory(path: Path) -> None:
    """Flush a folder's entries to disk, so that renames and new files in it persist."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(root: Path) -> None:
    """Fsync every file and folder below ``root``, ``root`` included."""
    for folder, _, filenames in os.walk(root):
        for name in filenames:
            fsync_file(Path(folder, name))
        fsync_directory(Path(folder))
