"""Experiment (issue 16): pretrained encoder vs scratch vs U-Net-16, post-processing, a 5-fold bag, cpu-quick.

Everything runs through the product's own commands (``buildings fit / tune / predict / score``), the way a
user runs them, on barnarp (val10): training on its training split, post-processing tuned on its
validation split only, every score on test_a (50 tiles) with the contest metric.

Phases (``--phases``, comma-separated; finished runs are skipped, so the script can be rerun):

* ``compare``  pretrained ``efficientnet_lite0`` U-Net / the same network from scratch / U-Net filters 16,
  the same wall-clock budget each (``--minutes``), every seed in ``--seeds``; each checkpoint scored with
  no post-processing, then tuned on validation and scored with the tuned choice, and each tuned step
  (threshold, min-area, hole filling, area gate, peak gate: added one at a time) applied to test_a.
* ``bag``      ``--folds`` runs of the pretrained U-Net with ``fit --folds N --fold K``
  (``--fold-minutes`` each), the bag tuned on validation and predicted as one ensemble.
* ``recipe``   ``buildings fit --config buildings/recipes/cpu-quick.json`` for every seed in ``--seeds``,
  tuned on validation, predicted and scored end to end (the time from fit to score is in each row).

    python experiments/accuracy_recipes.py [--phases compare,bag,recipe] [--seeds 0,1,2] [--minutes 4]
        [--out /tmp/accuracy] > rows.log

One JSON row per scored prediction on stdout (and in OUT/rows.jsonl); the summary tables at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BARNARP = Path(os.environ.get("BUILDINGS_BARNARP", ROOT.parent / "shared" / "data" / "barnarp"))
TRUTH = BARNARP / "test_a_mask.csv"
COMMON = ["--image-size", "256", "--batch-size", "8", "--epochs", "30", "--aug", "strong", "--augment-on", "cpu",
          "--workers", "2", "--lr", "0.002"]
MODELS = {
    "lite0-imagenet": ["--model", "unet", "--encoder", "efficientnet_lite0", "--encoder-weights", "imagenet",
                       "--freeze-encoder-epochs", "1"],
    "lite0-scratch": ["--model", "unet", "--encoder", "efficientnet_lite0"],
    "unet16-scratch": ["--model", "unet", "--model-option", "filters=16"],
}


def sh(args: list[str], log: Path) -> str:
    """Run a `buildings` command; its output goes to ``log``; a failure stops the experiment."""
    start = time.perf_counter()
    with open(log, "a") as handle:
        handle.write(f"\n$ {' '.join(args)}\n")
        handle.flush()
        done = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        handle.write(done.stdout)
        handle.write(f"[exit {done.returncode}, {time.perf_counter() - start:.0f} s]\n")
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(args)} — see {log}")
    return done.stdout


def score(submission: Path, log: Path) -> float:
    out = sh(["buildings", "score", "--json", str(submission), str(TRUTH)], log)
    return float(json.loads(out.strip().splitlines()[-1])["dice"])


def predict(checkpoints: list[Path], data: Path, out: Path, log: Path, post: str) -> float:
    if not out.exists():
        args = ["buildings", "predict", "--data", str(data), "--tta", "flip", "--postprocess", post, "--out", str(out)]
        for c in checkpoints:
            args += ["--checkpoint", str(c)]
        sh(args, log)
    return score(out, log)


def stage_choices(choice: dict) -> list[tuple[str, dict]]:
    """The tuned choice's steps as cumulative post-processing files (the order `buildings tune` reports)."""
    base = {"threshold": choice["threshold"], "min_area": 0, "fill_holes": False, "empty_below_area": 0,
            "empty_below_peak": 0.0}
    stages = [("threshold", {})]
    stages.append(("+ min-area", {"min_area": choice["min_area"]}))
    stages.append(("+ fill holes", {"fill_holes": choice["fill_holes"]}))
    stages.append(("+ area gate", {"empty_below_area": choice["empty_below_area"]}))
    stages.append(("+ peak gate", {"empty_below_peak": choice["empty_below_peak"]}))
    out, current = [], dict(base)
    for label, change in stages:
        current = {**current, **change}
        out.append((label, dict(current)))
    return out


def test_a_probabilities(checkpoint: Path, data: Path) -> dict[str, np.ndarray]:
    """Flip-TTA probabilities of one checkpoint on test_a, computed once and kept beside it (float16)."""
    from buildings.data.splits import open_split, split_items
    from buildings.inference import Predictor

    cache = checkpoint.parent / "test_a_probabilities.npz"
    if not cache.exists():
        predictor = Predictor.from_checkpoints([checkpoint], tta="flip")
        items = list(split_items(open_split(data, "test")))
        probs = predictor.batch_probabilities([load() for _, load in items])
        np.savez_compressed(cache, **{name: p[..., 0].astype(np.float16) for (name, _), p in zip(items, probs)})
    with np.load(cache) as stored:
        return {name: stored[name].astype(np.float32) for name in stored.files}


def contest_dice(probabilities: dict[str, np.ndarray], values: dict) -> float:
    """test_a contest Dice of thresholded, post-processed probabilities (what `buildings predict` writes)."""
    from buildings.formats.rle import decode_rle
    from buildings.formats.submission import image_dice, read_submission
    from buildings.inference import MaskRule, Postprocess

    truth = read_submission(TRUTH)
    rule = MaskRule(values.get("threshold", 0.5),
                    Postprocess(min_area=values.get("min_area", 0), fill_holes=values.get("fill_holes", False),
                                empty_below_area=values.get("empty_below_area", 0),
                                empty_below_peak=values.get("empty_below_peak", 0.0)))
    scores = [image_dice(rule.mask(p[..., None]).astype(bool), decode_rle(truth[name]))
              for name, p in probabilities.items()]
    assert len(scores) == len(truth)
    return float(np.mean(scores))


def tuned_rows(checkpoints: list[Path], data: Path, run: Path, log: Path, row: dict, cli_check: bool) -> list[dict]:
    """Tune on validation (`buildings tune`); score test_a with no post-processing, each cumulative
    step and the full choice, from probabilities computed once per checkpoint (their mean for a bag).
    ``cli_check``: also predict with the tuned choice through `buildings predict` and `score` it."""
    choice_file = checkpoints[0].parent / "postprocess.json"
    if not choice_file.exists():
        args = ["buildings", "tune", "--data", str(data), "--tta", "flip"]
        for c in checkpoints:
            args += ["--checkpoint", str(c)]
        sh(args, log)
    choice = json.loads(choice_file.read_text())
    per_model = [test_a_probabilities(c, data) for c in checkpoints]
    probs = {name: np.mean([m[name] for m in per_model], axis=0) for name in per_model[0]}
    rows = [{**row, "post": "none", "val": choice["baseline"], "test_a": contest_dice(probs, {})}]
    previous = None
    for (label, values), (_, val_score) in zip(stage_choices(choice), choice["steps"][1:], strict=True):
        if values == previous:  # this step chose "nothing": same predictions as the step before
            rows.append({**rows[-1], "post": label + " (nothing chosen)", "val": val_score})
            continue
        previous = values
        rows.append({**row, "post": label, "val": val_score, "choice": values, "test_a": contest_dice(probs, values)})
    if cli_check:
        rows.append({**row, "post": "tuned, through buildings predict + score", "val": choice["score"],
                     "test_a": predict(checkpoints, data, run / "pred-tuned.csv", log, "auto")})
    return rows


def emit(rows: list[dict], out: Path) -> None:
    with open(out / "rows.jsonl", "a") as handle:
        for r in rows:
            handle.write(json.dumps(r) + "\n")
            print(json.dumps(r), flush=True)


def summary(out: Path) -> str:
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    lines = ["| model | post-processing | seeds | val contest Dice (mean ± std) | test_a contest Dice (mean ± std) | per seed |",
             "|---|---|---:|---:|---:|---|"]
    groups: dict = {}
    nothing = " (nothing chosen)"  # a step that chose nothing for a seed keeps that seed's row in its step
    for r in rows:
        groups.setdefault((r["model"], r["post"].removesuffix(nothing)), []).append(r)
    for (model, post), rs in groups.items():
        def cell(key, rs=rs):
            v = [r[key] for r in rs if r.get(key) is not None]
            return f"{np.mean(v):.4f}" + (f" ± {np.std(v, ddof=1):.4f}" if len(v) > 1 else "") if v else ""
        seeds = ", ".join(f"{r['seed']}: {r['test_a']:.4f}" + ("*" if r["post"].endswith(nothing) else "")
                          for r in rs)
        lines.append(f"| {model} | {post} | {len(rs)} | {cell('val')} | {cell('test_a')} | {seeds} |")
    lines.append("")
    lines.append("`*`: this step chose nothing for that seed (its predictions are the step before's).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", default="compare,bag,recipe")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--minutes", type=float, default=4)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fold-minutes", type=float, default=3)
    parser.add_argument("--out", default="/tmp/accuracy")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    data = out / "tfds" / "tianchi_buildings" / "val10"
    if not data.exists():
        sh(["buildings", "data", "build", "--manual-dir", str(BARNARP), "--data-dir", str(out / "tfds"),
            "--config", "val10"], log)
    phases = args.phases.split(",")

    def train(run: Path, options: list[str]) -> dict:
        if not (run / "summary.json").exists():
            if (run / "config.json").exists():  # interrupted: finish it with the same options
                sh(["buildings", "fit", "--resume", str(run)], log)
            else:
                sh(["buildings", "fit", "--data", str(data), "--run-dir", str(run), *options], log)
        s = json.loads((run / "summary.json").read_text())
        return {"epochs": s.get("epochs_total"), "best_epoch": s.get("best_epoch"),
                "stop_reason": s.get("stop_reason")}

    if "compare" in phases:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for model in args.models.split(","):
                run = out / f"{model}-seed{seed}"
                if (run / "rows.done").exists():
                    continue
                info = train(run, [*COMMON, "--max-minutes", str(args.minutes), "--seed", str(seed), *MODELS[model]])
                row = {"model": model, "seed": seed, **info}
                if model == "lite0-imagenet":  # the post-processing study: on the pretrained model only
                    emit(tuned_rows([run / "best.keras"], data, run, log, row, cli_check=seed == 0), out)
                else:
                    emit([{**row, "post": "none",
                           "test_a": predict([run / "best.keras"], data, run / "pred-none.csv", log, "none")}], out)
                (run / "rows.done").touch()
    if "bag" in phases:
        runs = [out / f"bag-fold{k}" for k in range(1, args.folds + 1)]
        for k, run in enumerate(runs, 1):
            train(run, [*COMMON, "--max-minutes", str(args.fold_minutes), "--seed", "0", *MODELS["lite0-imagenet"],
                        "--folds", str(args.folds), "--fold", str(k)])
        bag = out / "bag"
        bag.mkdir(exist_ok=True)
        if not (bag / "rows.done").exists():
            # Each fold alone (no post-processing), then the bag, tuned on the validation split it never saw.
            singles = [{"model": "one fold alone", "seed": k, "post": "none",
                        "test_a": contest_dice(test_a_probabilities(r / "best.keras", data), {})}
                       for k, r in enumerate(runs, 1)]
            emit(singles, out)
            emit(tuned_rows([r / "best.keras" for r in runs], data, bag, log,
                            {"model": f"{args.folds}-fold bag", "seed": 0}, cli_check=False), out)
            (bag / "rows.done").touch()
    for seed in [int(s) for s in args.seeds.split(",")] if "recipe" in phases else []:
        run = out / f"cpu-quick-seed{seed}"
        if not (run / "rows.done").exists():
            start = time.perf_counter()
            info = train(run, ["--config", str(ROOT / "buildings" / "recipes" / "cpu-quick.json"), "--seed", str(seed)])
            rows = tuned_rows([run / "best.keras"], data, run, log, {"model": "cpu-quick recipe", "seed": seed, **info},
                              cli_check=True)
            for r in rows:
                r["end_to_end_s"] = round(time.perf_counter() - start)
            emit(rows, out)
            (run / "rows.done").touch()
    print(summary(out))


if __name__ == "__main__":
    main()
