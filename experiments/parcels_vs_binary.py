"""barnarp through the multi-class path (folder layout, 2 classes, CE + Lovasz-softmax) against the
binary path (Tianchi layout, 1 logit, BCE + Dice): same images, same validation hold-out (val10),
same model, schedule and seeds. Both are evaluated the same way on validation: building IoU
(pooled), mIoU over {background, building} and contest Dice (mean per-image Dice, 1 when both
empty, from the predicted building mask).

    python experiments/parcels_vs_binary.py [--epochs 12] [--seeds 0,1] [--out /tmp/parcels-vs-binary]

Prints a markdown table; figures recorded in experiments/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

from buildings.config import FitConfig  # noqa: E402
from buildings.data.land_parcels import contest_to_folders  # noqa: E402
from buildings.data.land_parcels_tfds import build_land_parcels  # noqa: E402
from buildings.data.pipeline import decode_record, open_split  # noqa: E402
from buildings.data.tianchi_tfds import build_dataset  # noqa: E402
from buildings.inference import Predictor, evaluate, load_checkpoints  # noqa: E402
from buildings.submission import image_dice  # noqa: E402
from buildings.training import fit  # noqa: E402

BARNARP = Path(__file__).resolve().parents[2] / "shared" / "data" / "barnarp"


def contest_dice(predictor, data) -> float:
    """Mean per-image Dice of the building class (1 = building for both paths)."""
    source = open_split(data, "validation")
    scores = []
    for i in range(len(source)):
        image, truth = decode_record(source[i])
        labels = predictor.mask(predictor.probabilities(image))
        scores.append(image_dice(labels == 1, truth == 1))
    return float(np.mean(scores))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--out", default="/tmp/parcels-vs-binary")
    args = parser.parse_args()
    out = Path(args.out)
    binary_data = build_dataset(BARNARP, out / "tfds", config="val10")
    contest_to_folders(BARNARP, out / "folders")
    parcels_data = build_land_parcels(out / "folders", out / "tfds", num_classes=2, validation_percent=10)
    for split in ("train", "validation", "test"):
        a, b = open_split(binary_data, split), open_split(parcels_data, split)
        assert sorted(a[i]["name"] for i in range(len(a))) == sorted(b[i]["name"] for i in range(len(b))), split
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for path, data, loss in (("binary", binary_data, "bce_dice"), ("2-class", parcels_data, "ce_lovasz")):
            run_dir = out / f"{path}-seed{seed}"
            config = FitConfig(model="unet", model_options={"filters": args.filters}, data=str(data),
                               epochs=args.epochs, batch_size=8, image_size=256, aug="light", lr=2e-3,
                               loss=loss, seed=seed, run_dir=str(run_dir), verbose=2)
            start = time.perf_counter()
            result = fit(config, resume=(run_dir / "config.json").exists())
            wall = time.perf_counter() - start
            predictor = Predictor(load_checkpoints([run_dir / "best.keras"]))
            scores = evaluate(predictor, data, "validation")
            row = {"path": path, "seed": seed, "loss": loss, "best_epoch": result.best_epoch,
                   "building_iou": scores.class_iou[1], "miou": scores.miou,
                   "contest_dice": contest_dice(predictor, data), "wall_s": wall}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    print("| path | seed | loss | best epoch | building IoU | mIoU | contest Dice | wall s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['path']} | {r['seed']} | {r['loss']} | {r['best_epoch']} | {r['building_iou']:.4f} | "
              f"{r['miou']:.4f} | {r['contest_dice']:.4f} | {r['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
