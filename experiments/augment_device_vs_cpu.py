"""Experiment: does augmentation on the device train as well as albumentations in the CPU workers?

barnarp (val10), the same U-Net, schedule and seeds, ``--augment-on cpu`` against
``--augment-on device`` (preset ``strong`` + CutMix 0.2 both ways), each checkpoint scored on test_a
with the contest metric. Prints one row per run and the mean ± std per path.

    python experiments/augment_device_vs_cpu.py [--seeds 0,1,2] [--epochs 20] [--out /tmp/aug-vs]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from buildings.data.splits import open_split, split_items  # noqa: E402
from buildings.data.tfds.tianchi_buildings import build_dataset  # noqa: E402
from buildings.formats.submission import score_submission  # noqa: E402
from buildings.inference import Predictor, write_predictions  # noqa: E402
from buildings.training import FitConfig, fit  # noqa: E402

BARNARP = Path(os.environ.get("BUILDINGS_BARNARP", Path(__file__).resolve().parents[2] / "shared" / "data" / "barnarp"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--out", default="/tmp/aug-vs")
    args = parser.parse_args()
    out = Path(args.out)
    data = build_dataset(BARNARP, out / "tfds", config="val10")
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for mode in ("cpu", "device"):
            run_dir = out / f"{mode}-seed{seed}"
            config = FitConfig(model="unet", model_options={"filters": args.filters}, data=str(data),
                               epochs=args.epochs, batch_size=8, image_size=256, aug="strong", cutmix=0.2,
                               augment_on=mode, lr=2e-3, seed=seed, run_dir=str(run_dir), verbose=2)
            start = time.perf_counter()
            result = fit(config, resume=(run_dir / "config.json").exists())
            wall = time.perf_counter() - start
            predictor = Predictor.from_checkpoints([run_dir / "best.keras"])
            write_predictions(predictor, split_items(open_split(data, "test")), run_dir / "submission.csv")
            score = score_submission(run_dir / "submission.csv", BARNARP / "test_a_mask.csv")
            row = {"augment_on": mode, "seed": seed, "best_epoch": result.best_epoch,
                   "val_contest_dice": result.best_score, "test_a_contest_dice": score.dice,
                   "test_a_dice_with_buildings": score.dice_with_buildings,
                   "images_per_s": result.summary.get("mean_images_per_s"), "wall_s": wall}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    print("| augmentation | seed | best epoch | val contest Dice | test_a contest Dice | test_a Dice (tiles with "
          "buildings) | train images/s | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['augment_on']} | {r['seed']} | {r['best_epoch']} | {r['val_contest_dice']:.4f} | "
              f"{r['test_a_contest_dice']:.4f} | {r['test_a_dice_with_buildings']:.4f} | {r['images_per_s']:.2f} | "
              f"{r['wall_s']:.0f} |")
    for mode in ("cpu", "device"):
        runs = [r for r in rows if r["augment_on"] == mode]
        cells = []
        for key in ("val_contest_dice", "test_a_contest_dice", "test_a_dice_with_buildings"):
            values = [r[key] for r in runs]
            spread = f" ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else ""
            cells.append(f"{np.mean(values):.4f}{spread}")
        print(f"| **{mode}, mean ± std** | {len(runs)} seeds | | " + " | ".join(cells) + " | | |")


if __name__ == "__main__":
    main()
