"""A training run's directory: everything needed to understand, reproduce and resume a run.

    runs/<model>-<YYYYmmdd-HHMMSS>[-N]/
      config.json   every option, package versions, backend, device, git commit, command
      history.csv   one row per epoch (losses, metrics, learning rate, images/s)
      best.keras    the checkpoint with the best monitored validation score; last.keras the latest
      summary.json  best score, its epoch, wall time, throughput
      backup/       Keras BackupAndRestore state, one folder per training phase (``--resume``)

New directories are created exclusively: two runs started in the same second get ``-2``, ``-3``...
rather than sharing one.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from buildings.errors import RunDirError

__all__ = ["RunDirectory", "package_versions", "git_commit"]


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
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


class RunDirectory:
    """The files of one run (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    config_path = property(lambda self: self.path / "config.json")
    history_path = property(lambda self: self.path / "history.csv")
    summary_path = property(lambda self: self.path / "summary.json")
    best_path = property(lambda self: self.path / "best.keras")
    last_path = property(lambda self: self.path / "last.keras")
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
            Path(path).mkdir(parents=True, exist_ok=True)
            return cls(path)
        base = Path(root) / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"
        base.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 1000):
            candidate = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
            try:
                candidate.mkdir()  # exclusive: a run started in the same second takes the next name
            except FileExistsError:
                continue
            return cls(candidate)
        raise RunDirError(f"{base}: no free run directory name")  # pragma: no cover

    @classmethod
    def for_resume(cls, path) -> RunDirectory:
        """An existing run to continue; its config.json must be there and readable."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunDirError(f"{run.path}: no such run directory")
        if not run.config_path.is_file():
            raise RunDirError(f"{run.path}: no config.json, so not a run directory buildings fit can resume")
        return run

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

    def finished_epochs(self) -> int:
        """Epochs finished according to BackupAndRestore's state (one folder per training phase)."""
        epochs = [int(json.loads(meta.read_text())["epoch"])
                  for meta in self.backup_dir.glob("phase*/training_metadata.json")]
        return max(epochs, default=0)

    def truncate_history(self, first_epoch: int) -> None:
        """Drop history rows of epochs >= ``first_epoch`` (written before a kill, to be redone)."""
        path = self.history_path
        if not path.exists():
            return
        lines = path.read_text().splitlines()
        if not lines:
            return
        kept = [lines[0]] + [row for row in lines[1:] if row and int(row.split(",")[0]) < first_epoch]
        path.write_text("\n".join(kept) + "\n")

    def history(self):
        """history.csv as a pandas DataFrame (empty when there is none yet)."""
        import pandas as pd

        if not self.history_path.exists() or not self.history_path.stat().st_size:
            return pd.DataFrame()
        return pd.read_csv(self.history_path)

    def best_so_far(self, monitor: str) -> float | None:
        history = self.history()
        if monitor in history and len(history):
            return float(history[monitor].max())
        return None
