"""``buildings demo``: the whole contest day on synthetic data, in a few minutes on a CPU.

synthesise the contest download → build the TFDS dataset → train a small U-Net → predict the test
split → write the submission and an overlay grid → score it against the synthetic truth.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2

__all__ = ["run_demo"]


def run_demo(out, *, epochs: int = 12, minutes: float = 5.0, n: int = 64, seed: int = 0, image_size: int = 256,
             say: Callable[[str], None] = print) -> dict:
    """Run the demo into folder ``out``; returns the paths written and the score.

    Training runs ``epochs`` epochs (the warmup + cosine schedule spans them, so the learning rate
    decays fully), stopping early after the epoch that crosses ``minutes`` on a slow machine."""
    from buildings.data.splits import open_split, split_items
    from buildings.data.synth import write_synthetic_contest
    from buildings.data.tfds.tianchi_buildings import build_dataset
    from buildings.formats.submission import score_submission
    from buildings.inference import Postprocess, Predictor, write_predictions
    from buildings.training import FitConfig, fit

    out = Path(out)
    download = out / "download"
    say(f"1/5 synthesising {n} contest tiles into {download}")
    write_synthetic_contest(download, n, seed=seed)
    say("2/5 building the TFDS dataset tianchi_buildings/val20")
    dataset = build_dataset(download, out / "tfds", config="val20")
    say(f"3/5 training a small U-Net for {epochs} epochs (at most about {minutes:g} minutes)")
    run_dir = out / "run"
    config = FitConfig(model="unet", model_options={"filters": 16, "depth": 4}, data=str(dataset), epochs=epochs,
                       batch_size=4, image_size=image_size, aug="light", lr=3e-3, warmup_epochs=1.0,
                       max_minutes=minutes, seed=seed, run_dir=str(run_dir), verbose=2)
    result = fit(config, resume=(run_dir / "config.json").exists())
    say(f"    best validation contest Dice {result.best_dice:.4f} at epoch {result.best_epoch}")
    say("4/5 predicting the test split with flip TTA")
    predictor = Predictor.from_checkpoints([run_dir / "best.keras"], tta="flip")
    submission = out / "submission.csv"
    overlays = out / "overlays"
    write_predictions(predictor, split_items(open_split(dataset, "test")), submission, postprocess=Postprocess(30),
                      save_overlays=overlays)
    grid = _overlay_grid(sorted(overlays.glob("*.png"))[:8], out / "overlay.png")
    say("5/5 scoring against the synthetic truth")
    score = score_submission(submission, download / "test_a_mask.csv")
    return {"submission": submission, "overlay": grid, "run_dir": run_dir, "score": score,
            "best_validation_dice": result.best_dice}


def _overlay_grid(files, path: Path, tile: int = 256) -> Path:
    from buildings.visualize import write_grid_png

    tiles = [cv2.cvtColor(cv2.resize(cv2.imread(str(f)), (tile, tile), interpolation=cv2.INTER_AREA),
                          cv2.COLOR_BGR2RGB) for f in files]
    return write_grid_png(path, tiles, columns=4)
