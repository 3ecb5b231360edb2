"""Reading zip archives with one clear error for every way they break.

A file that is not a zip, a truncated one, a damaged central directory or member offset, a member
whose data fails its CRC or does not inflate: each becomes one :class:`~buildings.errors.DataError`
naming the archive (and the member), instead of ``BadZipFile``, ``zlib.error`` or ``EOFError``
tracebacks from deep inside ``zipfile``.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from buildings.errors import DataError

__all__ = ["open_zip", "read_member"]

_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError)


def open_zip(path, error=DataError) -> zipfile.ZipFile:
    """Open ``path`` as a zip; ``error`` (a :class:`DataError` by default) names it if it is not one."""
    path = Path(path)
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error(f"{path}: a folder, not a zip file") from None
    except _CORRUPT as err:
        raise error(f"{path}: not a readable zip file ({_reason(err)})") from None


def read_member(archive: zipfile.ZipFile, member: str, where=None, error=DataError) -> bytes:
    """The bytes of ``member``; a damaged member raises ``error`` naming ``archive:member``."""
    where = where or archive.filename
    try:
        return archive.read(member)
    except _CORRUPT as err:
        raise error(f"{where}:{member}: corrupt zip member ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."
