"""A training run's directory: everything needed to understand, reproduce and resume a run.

    runs/<model>-<YYYYmmdd-HHMMSS>[-N]/
      config.json   every option, package versions, backend, device, git commit, command
      history.csv   one row per finished epoch, numbered from 1 as Keras's progress bar does (losses,
                    metrics, learning rate, images/s)
      curves.png    losses and validation metrics per epoch, the best epoch marked (rewritten each epoch)
      best.keras    the checkpoint with the best monitored validation score; last.keras the latest
      summary.json  best score, its epoch, wall time, throughput
      backup/       state.json + the weights (model and optimizer) of the last two finished epochs

New directories are created exclusively: two runs started in the same second get ``-2``, ``-3``...
rather than sharing one.

**An epoch is finished when ``backup/state.json`` says so.** At the end of each epoch
(:meth:`RunDirectory.commit_epoch`) the files are written in this order, each to a temporary that is
flushed and renamed (``buildings.files``): history.csv, last.keras, the best checkpoint if the
epoch improved it (kept aside in backup/ as pending), the epoch's weights, then state.json — the
commit point — and finally the pending best checkpoint is renamed to best.keras and weights older
than the previous epoch's are deleted. A ``kill -9`` at any instant leaves the previous commit
whole: :meth:`RunDirectory.recover` reads state.json, completes or discards a pending best
checkpoint, drops history rows the state does not cover, and falls back to the previous epoch's
weights if the latest cannot be read. curves.png is drawn from history.csv after the commit.

``fit`` opens its directory once, with :meth:`RunDirectory.for_fit`: the run to continue
(:meth:`RunDirectory.for_resume`) or a new one (:meth:`RunDirectory.create`), and
:meth:`RunDirectory.start` says where training starts (recovered, or reset for a new run).
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from buildings.errors import RunDirError
from buildings.files import atomic_path, os_error_message, write_text

__all__ = ["BackupState", "RunDirectory", "git_commit", "package_versions"]


def package_versions() -> dict:
    """Versions of the packages a run depends on (those imported so far)."""
    import keras
    import numpy as np

    import buildings

    versions = {"buildings": buildings.__version__, "keras": keras.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    for module in ("torch", "jax", "tensorflow", "tensorflow_datasets", "albumentations", "cv2"):
        if module in sys.modules:
            versions[module] = getattr(sys.modules[module], "__version__", "?")
    return versions


def git_commit() -> str | None:
    """The commit of the package's checkout, when it is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON, atomically (temporary file renamed over the target)."""
    write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


class RunDirectory:
    """The files of one run (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)
        self._made: list[Path] = []  # the folders create() made, deepest first

    def __str__(self) -> str:
        return str(self.path)

    config_path = property(lambda self: self.path / "config.json")
    history_path = property(lambda self: self.path / "history.csv")
    summary_path = property(lambda self: self.path / "summary.json")
    best_path = property(lambda self: self.path / "best.keras")
    last_path = property(lambda self: self.path / "last.keras")
    curves_path = property(lambda self: self.path / "curves.png")
    backup_dir = property(lambda self: self.path / "backup")

    # -- creating and reopening ----------------------------------------------------------------
    @staticmethod
    def check_new(path) -> None:
        """Refuse to start a new run in a folder that already holds one."""
        if path is not None and (Path(path) / "config.json").exists():
            raise RunDirError(f"{path} already holds a run: pass --resume to continue it, or another --run-dir")

    @classmethod
    def create(cls, path=None, *, model: str = "run", root="runs") -> RunDirectory:
        """Create the directory of a new run: ``path``, or ``root/<model>-<time>`` made unique."""
        if path is not None:
            cls.check_new(path)
            made = _missing_folders(Path(path))
            Path(path).mkdir(parents=True, exist_ok=True)
        else:
            path, made = cls._new_folder(Path(root) / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}")
        run = cls(path)
        run._made = made
        return run

    @staticmethod
    def _new_folder(base: Path) -> tuple[Path, list[Path]]:
        """``base``, or ``base-2``, ``base-3``... made exclusively; with the folders made, deepest first."""
        made = _missing_folders(base.parent)
        base.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 1000):
            candidate = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
            try:
                candidate.mkdir()  # exclusive: a run started in the same second takes the next name
            except FileExistsError:
                continue
            return candidate, [candidate, *made]
        raise RunDirError(f"{base}: no free run directory name")  # pragma: no cover

    @staticmethod
    def check_resumable(path) -> Path:
        """Refuse, in one line, a folder that holds no run to continue; returns its config.json."""
        path = Path(path)
        if not path.is_dir():
            raise RunDirError(f"{path}: no such run directory")
        if not (path / "config.json").is_file():
            raise RunDirError(f"{path}: no config.json, so not a run directory buildings fit can resume")
        return path / "config.json"

    @classmethod
    def for_resume(cls, path) -> RunDirectory:
        """An existing run to continue; its config.json must be there (:meth:`check_resumable`)."""
        cls.check_resumable(path)
        return cls(path)

    @classmethod
    @contextmanager
    def for_fit(cls, path, *, resume: bool, model: str):
        """The directory a ``fit`` call writes, opened once: the run in ``path`` to continue
        (``resume``), or a new run's (:meth:`create`). If the call fails before anything is written
        in a new directory (the data or an option refused once the data is read), the folders made
        for it are removed again: a refused run leaves nothing behind."""
        run = cls.for_resume(path) if resume else cls.create(path, model=model)
        try:
            yield run
        except BaseException:
            run._remove_if_empty()
            raise

    def _remove_if_empty(self) -> None:
        for folder in self._made:  # deepest first; rmdir removes empty folders only
            try:
                folder.rmdir()
            except OSError:
                return

    def start(self, *, resume: bool) -> BackupState | None:
        """Where training starts: after the last committed epoch of a run continued (:meth:`recover`;
        None before its first), or, for a new run, at the beginning (None), with whatever an earlier
        attempt left in this folder forgotten (:meth:`reset`)."""
        if resume:
            return self.recover()
        self.reset()
        return None

    # -- contents ------------------------------------------------------------------------------
    def write_config(self, payload: dict) -> None:
        write_json(self.config_path, payload)

    def write_summary(self, summary: dict, *, resumed: bool) -> dict:
        """Write summary.json; ``wall_seconds_total`` adds up over resumed calls."""
        total = summary["wall_seconds"]
        if resumed and self.summary_path.exists():
            try:
                total += json.loads(self.summary_path.read_text()).get("wall_seconds_total", 0)
            except (OSError, json.JSONDecodeError):
                pass
        summary = {**summary, "wall_seconds_total": total}
        write_json(self.summary_path, summary)
        return summary

    def reset(self) -> None:
        """Forget the epochs of an earlier attempt in this folder (a new run started here)."""
        import shutil

        for path in (self.history_path, self.summary_path, self.best_path, self.last_path):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.backup_dir, ignore_errors=True)

    # -- epochs: commit and recovery -----------------------------------------------------------
    state_path = property(lambda self: self.backup_dir / "state.json")

    def read_state(self) -> BackupState | None:
        """The last committed epoch, or None before the first."""
        if not self.state_path.exists():
            return None
        try:
            return BackupState.from_dict(json.loads(self.state_path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise RunDirError(f"{self.state_path}: unreadable backup state ({err})") from None

    def commit_epoch(self, model, *, epoch: int, phase: int, logs: dict, monitor: str, export=None) -> BackupState:
        """Write everything of finished ``epoch`` (0-based) in commit order (module docstring).
        ``model``'s weights (and optimizer state) go to the backup; ``export`` (default ``model``:
        the segmentation model a training wrapper holds) to last.keras / best.keras."""
        export = model if export is None else export
        previous = self.read_state()
        self._write_history(epoch, {**logs, "phase": phase})
        with atomic_path(self.last_path, suffix=".keras") as temporary:
            export.save(temporary)
        best, best_epoch = (previous.best, previous.best_epoch) if previous else (None, None)
        value = logs.get(monitor)
        pending = None
        if value is not None and value == value and (best is None or value > best):  # value == value: not NaN
            best, best_epoch = float(value), epoch
            pending = self._pending_best(epoch)
            with atomic_path(pending, suffix=".keras") as temporary:
                export.save(temporary)
        weights = f"epoch-{epoch + 1:04d}.weights.h5"
        with atomic_path(self.backup_dir / weights, suffix=".weights.h5") as temporary:
            model.save_weights(temporary)
        state = BackupState(epoch=epoch + 1, phase=phase, weights=weights, best=best, best_epoch=best_epoch,
                            previous=previous.without_previous() if previous else None)
        write_text(self.state_path, json.dumps(state.as_dict(), indent=2) + "\n")  # the commit point
        self._finish(state)
        self.write_curves(monitor)
        return state

    def write_curves(self, monitor: str) -> Path:
        """Draw curves.png from history.csv."""
        from buildings.figures import curves_figure

        return curves_figure(self.curves_path, self.history(), monitor=monitor,
                             title=f"{self.path.name}: training curves ({monitor} picks the best epoch)")

    def recover(self) -> BackupState | None:
        """Bring the run directory back to its last committed epoch after a crash or ``kill -9``;
        returns that state (None: no epoch finished yet)."""
        state = self.read_state()
        if state is not None:
            if not _readable_weights(self.backup_dir / state.weights) and state.previous is not None \
                    and _readable_weights(self.backup_dir / state.previous.weights):
                state = BackupState(**{**asdict(state.previous), "best": state.best, "best_epoch": state.best_epoch})
                write_text(self.state_path, json.dumps(state.as_dict(), indent=2) + "\n")
            elif not _readable_weights(self.backup_dir / state.weights):
                raise RunDirError(f"{self.backup_dir / state.weights}: the backup weights cannot be read and there "
                                  "is no earlier backup to fall back to")
            self._finish(state)
        else:
            for pending in self.backup_dir.glob("best-epoch-*.keras"):
                pending.unlink()
        self.truncate_history(state.epoch if state else 0)
        return state

    def _pending_best(self, epoch: int) -> Path:
        return self.backup_dir / f"best-epoch-{epoch:04d}.keras"

    def _finish(self, state: BackupState) -> None:
        """After a commit: the pending best checkpoint of the committed epoch becomes best.keras,
        other pending ones and weights older than the previous epoch's go."""
        try:
            pending = self._pending_best(state.best_epoch) if state.best_epoch is not None else None
            if pending is not None and pending.exists():
                os.replace(pending, self.best_path)
            for stale in self.backup_dir.glob("best-epoch-*.keras"):
                stale.unlink()
            keep = {state.weights, state.previous.weights if state.previous else None}
            for old in self.backup_dir.glob("epoch-*.weights.h5"):
                if old.name not in keep:
                    old.unlink()
        except OSError as err:
            raise RunDirError(os_error_message(err)) from None

    def finished_epochs(self) -> int:
        state = self.read_state()
        return state.epoch if state else 0

    def _history_rows(self) -> tuple[list[str], list[dict]]:
        if not self.history_path.exists():
            return [], []
        reader = csv.DictReader(io.StringIO(self.history_path.read_text()))
        rows = []
        for row in reader:
            try:
                row["epoch"] = int(row["epoch"])
            except (KeyError, TypeError, ValueError):
                continue  # a torn row (cannot happen with atomic writes, but costs nothing)
            rows.append(row)
        return list(reader.fieldnames or []), rows

    def _write_history(self, epoch: int, logs: dict) -> None:
        fields, rows = self._history_rows()
        number = epoch + 1  # as Keras's progress bar counts ("Epoch 1/12"): 1-based wherever a user reads it
        rows = [row for row in rows if row["epoch"] < number] + [{"epoch": number, **logs}]
        fields = ["epoch"] + sorted({*[f for f in fields if f != "epoch"], *logs})
        self._write_rows(fields, rows)

    def _write_rows(self, fields: list[str], rows: list[dict]) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n", restval="")
        writer.writeheader()
        writer.writerows(rows)
        write_text(self.history_path, out.getvalue())

    def truncate_history(self, first_epoch: int) -> None:
        """Drop history rows of 0-based epochs >= ``first_epoch`` (written before a kill, to be redone);
        history.csv numbers epochs from 1, so that is rows numbered above ``first_epoch``."""
        fields, rows = self._history_rows()
        kept = [row for row in rows if row["epoch"] <= first_epoch]
        if fields and len(kept) != len(rows):
            self._write_rows(fields, kept)

    def history(self):
        """history.csv as a pandas DataFrame (empty when there is none yet)."""
        import pandas as pd

        if not self.history_path.exists() or not self.history_path.stat().st_size:
            return pd.DataFrame()
        return pd.read_csv(self.history_path)



@dataclass(frozen=True)
class BackupState:
    """``backup/state.json``: ``epoch`` epochs are finished, in training phase ``phase``, their
    weights (model and optimizer) in ``weights``; the best monitored value and its epoch; the
    state before (whose weights are kept as the fall-back)."""

    epoch: int
    phase: int
    weights: str
    best: float | None = None
    best_epoch: int | None = None
    previous: BackupState | None = None

    @classmethod
    def from_dict(cls, values: dict) -> BackupState:
        previous = values.get("previous")
        return cls(epoch=int(values["epoch"]), phase=int(values["phase"]), weights=str(values["weights"]),
                   best=values.get("best"), best_epoch=values.get("best_epoch"),
                   previous=cls.from_dict(previous) if previous else None)

    def as_dict(self) -> dict:
        return {**asdict(self), "previous": self.previous.as_dict() if self.previous else None}

    def without_previous(self) -> BackupState:
        return BackupState(self.epoch, self.phase, self.weights, self.best, self.best_epoch)


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first (what ``mkdir -p`` makes)."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _readable_weights(path: Path) -> bool:
    """Whether ``path`` is a complete HDF5 weights file (h5py can open it and walk its groups)."""
    import h5py

    try:
        with warnings.catch_warnings(), h5py.File(path, "r") as handle:
            warnings.simplefilter("ignore")
            handle.visit(lambda name: None)
        return True
    except (OSError, ValueError, KeyError):
        return False
