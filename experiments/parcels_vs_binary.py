"""barnarp through the multi-class path (folder layout, 2 classes, CE + Lovasz-softmax) against the
binary path (Tianchi layout, 1 logit, BCE + Dice): same images, same validation hold-out (val10),
same model, schedule and seeds. Both are evaluated the same way: on validation (13 tiles), building
IoU (pooled), mIoU over {background, building} and contest Dice (mean per-image Dice, 1 when both
empty, from the predicted building mask); on test_a (50 tiles, spatially disjoint, truth from
test_a_mask.csv), contest Dice and pooled building IoU. The seed-to-seed spread within each path is
the noise the difference between the paths is compared with.

    python experiments/parcels_vs_binary.py [--epochs 12] [--seeds 0,1,2] [--out /tmp/parcels-vs-binary]

Prints a markdown table (one row per run, then mean +- std per path); figures recorded in
experiments/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

from buildings.data.land_parcels import contest_to_folders  # noqa: E402
from buildings.data.splits import decode_record, open_split, split_items  # noqa: E402
from buildings.data.tfds.land_parcels import build_land_parcels  # noqa: E402
from buildings.data.tfds.tianchi_buildings import build_dataset  # noqa: E402
from buildings.formats.rle import decode_rle  # noqa: E402
from buildings.formats.submission import image_dice, read_submission  # noqa: E402
from buildings.inference import Predictor, evaluate  # noqa: E402
from buildings.training import FitConfig, fit  # noqa: E402

BARNARP = Path(__file__).resolve().parents[2] / "shared" / "data" / "barnarp"


def building_scores(predictor, pairs) -> tuple[float, float]:
    """(contest Dice, pooled building IoU) over (image, truth) pairs; class 1 = building in both paths."""
    dice, intersection, union = [], 0, 0
    for image, truth in pairs:
        pred, truth = predictor.mask(predictor.probabilities(image)) == 1, truth == 1
        dice.append(image_dice(pred, truth))
        intersection += int(np.count_nonzero(pred & truth))
        union += int(np.count_nonzero(pred | truth))
    return float(np.mean(dice)), intersection / max(union, 1)


def validation_pairs(data):
    source = open_split(data, "validation")
    return (decode_record(source[i]) for i in range(len(source)))


def test_pairs(data, truth: dict):
    return ((load(), truth[name]) for name, load in split_items(open_split(data, "test")))


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
    test_truth = {name: decode_rle(rle, (512, 512))
                  for name, rle in read_submission(BARNARP / "test_a_mask.csv", shape=(512, 512)).items()}
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
            predictor = Predictor.from_checkpoints([run_dir / "best.keras"])
            scores = evaluate(predictor, data, "validation")
            test_dice, test_iou = building_scores(predictor, test_pairs(data, test_truth))
            row = {"path": path, "seed": seed, "loss": loss, "best_epoch": result.best_epoch,
                   "building_iou": scores.class_iou[1], "miou": scores.miou,
                   "contest_dice": building_scores(predictor, validation_pairs(data))[0],
                   "test_dice": test_dice, "test_building_iou": test_iou, "wall_s": wall}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    keys = ("building_iou", "miou", "contest_dice", "test_dice", "test_building_iou")
    print("| path | seed | loss | best epoch | val building IoU | val mIoU | val contest Dice | "
          "test_a contest Dice | test_a building IoU | wall s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['path']} | {r['seed']} | {r['loss']} | {r['best_epoch']} | "
              + " | ".join(f"{r[k]:.4f}" for k in keys) + f" | {r['wall_s']:.0f} |")
    for path in ("binary", "2-class"):
        runs = [r for r in rows if r["path"] == path]
        cells = [f"{np.mean([r[k] for r in runs]):.4f} ± {np.std([r[k] for r in runs], ddof=1):.4f}"
                 if len(runs) > 1 else f"{runs[0][k]:.4f}" for k in keys]
        print(f"| **{path}, mean ± std** | {len(runs)} seeds | | | " + " | ".join(cells) + " | |")


if __name__ == "__main__":
    main()
