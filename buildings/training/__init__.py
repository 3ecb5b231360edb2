"""Training: ``fit`` (``trainer``) tells the story of a run; its chapters are the run directory
(``run_dir``), the data (``data``), the training objective (``objective``: loss, metrics, optimiser,
schedule), the phases (``phases``: encoder frozen, then trained) and the callbacks (``callbacks``).
The options are ``buildings.config``'s.

    from buildings.training import FitConfig, fit
    result = fit(FitConfig(model="attunet", data="tianchi_buildings", epochs=30))

Names are loaded on first use, so ``buildings.config`` (what the command line needs to
show its options) does not import Keras.
"""

from __future__ import annotations

import importlib

__all__ = ["FitConfig", "RunDirectory", "RunResult", "fit", "load_run_config", "make_fit_config"]

_HOMES = {"FitConfig": "buildings.config", "load_run_config": "buildings.config",
          "make_fit_config": "buildings.config", "RunDirectory": "buildings.training.run_dir",
          "RunResult": "buildings.training.trainer", "fit": "buildings.training.trainer"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'buildings.training' has no attribute {name!r}")
