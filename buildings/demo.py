"""``buildings demo``: the whole contest day on synthetic data, in a few minutes on a CPU.

synthesise the contest download → build the TFDS dataset → train a small U-Net → predict the test
split → write the submission and an overlay grid → score it against the synthetic truth.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

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
    from buildings.inference import MaskRule, Postprocess, Predictor, write_predictions
    from buildings.training import FitConfig, fit

    out = Path(out)
    run_dir = out / "run"
    if run_dir.exists():  # a demo is a fresh run each time: say so rather than silently resume an old one
        say(f"0/5 starting afresh: removing the previous demo run {run_dir}")
        shutil.rmtree(run_dir)
    download = out / "download"
    say(f"1/5 synthesising {n} contest tiles into {download}")
    write_synthetic_contest(download, n, seed=seed)
    say("2/5 building the TFDS dataset tianchi_buildings/val20")
    dataset = build_dataset(download, out / "tfds", config="val20")
    say(f"3/5 training a small U-Net for {epochs} epochs (at most about {minutes:g} minutes)")
    config = FitConfig(model="unet", model_options={"filters": 16, "depth": 4}, data=str(dataset), epochs=epochs,
                       batch_size=4, image_size=image_size, aug="light", lr=3e-3, warmup_epochs=1.0,
                       max_minutes=minutes, seed=seed, run_dir=str(run_dir), verbose=2)
    result = fit(config)
    if result.stop_reason:
        say(f"    {result.stop_reason}")
    say(f"    best validation contest Dice {result.best_dice:.4f} at epoch {result.best_epoch} of {epochs}")
    say("4/5 predicting the test split with flip TTA")
    predictor = Predictor.from_checkpoints([run_dir / "best.keras"], tta="flip", rule=MaskRule(postprocess=Postprocess(30)))
    submission = out / "submission.csv"
    test = open_split(dataset, "test")
    write_predictions(predictor, split_items(test), submission)
    say("5/5 scoring against the synthetic truth")
    truth_csv = download / "test_a_mask.csv"
    score = score_submission(submission, truth_csv)
    grid = _overlay_figure(out / "overlay.png", test, submission, truth_csv, score)
    return {"submission": submission, "overlay": grid, "run_dir": run_dir, "score": score,
            "best_validation_dice": result.best_dice}


def _overlay_figure(path: Path, test, submission: Path, truth_csv: Path, score, n: int = 8) -> Path:
    """The first ``n`` test tiles: prediction against the synthetic truth, each with its Dice."""
    from buildings.data.splits import split_items
    from buildings.figures import Panel, panels_figure
    from buildings.formats.rle import decode_rle
    from buildings.formats.submission import read_submission

    predicted, truth = read_submission(submission), read_submission(truth_csv)
    panels = []
    for name, load in list(split_items(test))[:n]:
        image = load()
        panels.append(Panel(name, image, truth=decode_rle(truth[name], image.shape[:2]),
                            prediction=decode_rle(predicted[name], image.shape[:2]),
                            score=score.per_image_dice[name]))
    title = (f"buildings demo: predicted vs synthetic truth, {len(panels)} of {score.n_images} test tiles "
             f"(contest score {score.dice:.3f})")
    return panels_figure(path, panels, title=title)
