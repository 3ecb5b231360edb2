"""Writing files so that nothing half-written is ever mistaken for output.

Every output of the package (submissions, result.zip, PNG folders, datasets, checkpoints, run
files) is written under a temporary name beside its target, flushed to disk and renamed over the
target only once complete; on any failure the temporary is removed. A process killed with
``kill -9`` cannot run that clean-up, so temporaries carry the writer's process id
(``.<target>.buildings-tmp.<pid>.<random>``) and the next writer of the same target removes those
whose process is gone.

Operating-system failures while writing (a full disk, a missing permission, a read-only file
system) become one :class:`~buildings.errors.OutputError` naming the target and the reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from buildings.errors import OutputError

__all__ = ["TEMP_MARK", "atomic_dir", "atomic_path", "fsync_path", "os_error_message", "refuse_overwrites",
           "check_writable_folder",
           "remove_stale_temporaries",
           "write_bytes", "write_text"]

TEMP_MARK = ".buildings-tmp."


def os_error_message(err: OSError, path=None) -> str:
    """``<path>: <reason>`` for an OS error, naming the path the error carries or ``path``."""
    where = err.filename if err.filename is not None else path
    if path is not None and where is not None and TEMP_MARK in str(where):
        where = path  # the hidden temporary is ours: name what it stands for
    reason = err.strerror or (errno.errorcode.get(err.errno) if err.errno else None) or str(err) or type(err).__name__
    if err.filename2 is not None:
        where = f"{where} -> {err.filename2}"
    return f"{where}: {reason}" if where is not None else reason


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(target) -> list[Path]:
    """Remove temporaries of ``target`` left by writers that no longer run; returns what went."""
    target = Path(target)
    removed = []
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        return removed
    for candidate in folder.glob(f".{target.name}{TEMP_MARK}*"):
        try:
            pid = int(candidate.name[len(f".{target.name}{TEMP_MARK}"):].split(".", 1)[0])
        except ValueError:
            continue
        if _pid_alive(pid):
            continue
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _temporary_name(target: Path, suffix: str = "") -> str:
    return f".{target.name}{TEMP_MARK}{os.getpid()}.{secrets.token_hex(4)}{suffix}"


def fsync_path(path) -> None:
    """Flush a file's (or a folder's) data to disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                fsync_path(child)
    fsync_path(path)


@contextlib.contextmanager
def atomic_path(target, *, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``target`` to write a file at; on success it is flushed and renamed
    over ``target``, on failure removed. ``suffix`` ends the temporary name (Keras wants
    ``.keras`` / ``.weights.h5``). OS errors become one :class:`OutputError` naming ``target``."""
    target = Path(target)
    temporary = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        temporary = target.parent / _temporary_name(target, suffix)
        yield temporary
        fsync_path(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp-style temporaries are 0600; outputs are not
        os.replace(temporary, target)
        fsync_path(target.parent)
    except OutputError:
        raise
    except OSError as err:
        raise OutputError(os_error_message(err, target)) from None
    finally:
        if temporary is not None and temporary.exists():
            temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target) -> Iterator[Path]:
    """A temporary folder beside ``target`` to fill; on success it replaces ``target`` (an
    existing ``target`` is kept until the new one is complete, then removed), on failure it is
    removed. OS errors become one :class:`OutputError` naming ``target``."""
    target = Path(target)
    temporary = retired = None
    created = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        temporary = target.parent / _temporary_name(target)
        temporary.mkdir()
        yield temporary
        _fsync_tree(temporary)
        if target.exists():
            retired = target.parent / _temporary_name(target, ".old")
            os.replace(target, retired)
        os.replace(temporary, target)
        fsync_path(target.parent)
    except OSError as err:
        if retired is not None and retired.exists() and not target.exists():
            os.replace(retired, target)  # put the previous one back
        if isinstance(err, OutputError):
            raise
        raise OutputError(os_error_message(err, target)) from None
    except BaseException:
        if retired is not None and retired.exists() and not target.exists():
            os.replace(retired, target)
        raise
    finally:
        for leftover in (temporary, retired):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
        if not target.exists():
            for folder in created:  # innermost first: the folders made for this target, if left empty
                with contextlib.suppress(OSError):
                    folder.rmdir()


def write_bytes(target, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)
    return Path(target)


def write_text(target, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``target`` atomically."""
    with atomic_path(target) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
    return Path(target)


def refuse_overwrites(inputs, outputs) -> None:
    """Before any work: refuse an output that would replace one of ``inputs`` (paths read by the
    run) or that another output of the same run also writes. ``outputs``: (what, path) pairs, e.g.
    ("--save-masks", folder / "a.png"). Paths are compared resolved (symbolic links, ``..``); the
    one-line :class:`OutputError` names both."""
    from buildings.errors import OutputError

    read = {os.path.realpath(p): Path(p) for p in inputs}
    written: dict[str, tuple[str, Path]] = {}
    for what, path in outputs:
        key = os.path.realpath(path)
        if key in read:
            raise OutputError(f"{what} {path} would overwrite the input {read[key]}: write it somewhere else")
        if key in written and written[key][0] != what:
            raise OutputError(f"{written[key][0]} and {what} would both write {path}: give them different places")
        if key in written:
            raise OutputError(f"{what} would write {path} twice")
        written[key] = (what, Path(path))


def check_writable_folder(folder, target=None) -> Path:
    """Make ``folder`` (and its parents) if needed and check that files can be created in it,
    before any work: one OutputError naming ``target`` (or the folder) otherwise."""
    from buildings.errors import OutputError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(os_error_message(err, target or folder)) from None
    if not folder.is_dir():
        raise OutputError(f"{target or folder}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{target or folder}: cannot write in {folder} (permission denied)")
    return folder
