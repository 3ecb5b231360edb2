"""Experiment (issue 26): a newcomer's first real run, with nothing but the defaults.

For every model in ``--models`` and seed in ``--seeds``, on barnarp laid out as the contest
download, the commands a user types, each timed:

    buildings data build --manual-dir BARNARP --config val10 --data-dir OUT/tfds     (once)
    buildings fit --model M --seed S --data tianchi_buildings/val10 --data-dir OUT/tfds --run-dir RUN
    buildings tune --checkpoint RUN/best.keras --data ... --tta flip                 (validation only)
    buildings predict --checkpoint RUN/best.keras --data ... --split test --tta flip --out RUN/submission.csv
    buildings score --json RUN/submission.csv BARNARP/test_a_mask.csv

``fit`` gets no size, schedule or encoder option: what it trains is what the machine's recipe fills
(``buildings.recipes``), read back from the run's config.json. Finished rows are kept, so the
script can be rerun to add seeds or models.

    python experiments/first_run.py [--models attunet,unet,deeplabv3plus] [--seeds 0,1,2] [--out /tmp/first-run]

One JSON row per run on stdout and in OUT/rows.jsonl; the Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BARNARP = Path(os.environ.get("BUILDINGS_BARNARP", ROOT.parent / "shared" / "data" / "barnarp"))
DATA = "tianchi_buildings/val10"


def timed(args: list[str], log: Path) -> tuple[str, float]:
    """Run a command, its output appended to ``log``; its stdout and wall seconds. A failure stops here."""
    start = time.perf_counter()
    with open(log, "a") as handle:
        handle.write(f"\n$ {' '.join(args)}\n")
        handle.flush()
        done = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seconds = time.perf_counter() - start
        handle.write(done.stdout + f"[exit {done.returncode}, {seconds:.0f} s]\n")
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(args)}; see {log}")
    return done.stdout, seconds


def run_one(model: str, seed: int, out: Path, data_dir: Path) -> dict:
    run = out / f"{model}-seed{seed}"
    log = out / f"{model}-seed{seed}.log"
    data = ["--data", DATA, "--data-dir", str(data_dir)]
    checkpoint = ["--checkpoint", str(run / "best.keras")]
    _, fit_s = timed(["buildings", "fit", "--model", model, "--seed", str(seed), *data, "--run-dir", str(run)], log)
    _, tune_s = timed(["buildings", "tune", *checkpoint, *data, "--tta", "flip"], log)
    submission = run / "submission.csv"
    _, predict_s = timed(["buildings", "predict", *checkpoint, *data, "--split", "test", "--tta", "flip",
                          "--out", str(submission)], log)
    scored, score_s = timed(["buildings", "score", "--json", str(submission), str(BARNARP / "test_a_mask.csv")], log)
    config = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    post = json.loads((run / "postprocess.json").read_text())
    return {"model": model, "seed": seed, "test_a_dice": json.loads(scored.strip().splitlines()[-1])["dice"],
            "best_val_dice": summary.get("best_val_contest_dice"), "best_epoch": summary.get("best_epoch"),
            "epochs_run": summary.get("epochs_total"), "stop_reason": summary.get("stop_reason"),
            "filled": config["options"].get("device_defaults"), "encoder": config["options"].get("encoder"),
            "parameters": config.get("parameters"), "postprocess": post.get("rule", post),
            "fit_s": round(fit_s), "tune_s": round(tune_s), "predict_s": round(predict_s), "score_s": round(score_s)}


def table(rows: list[dict]) -> str:
    lines = ["| model | seed | encoder (filled) | epochs | best val Dice (epoch) | test_a Dice | fit s | tune s | "
             "predict s | score s |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['seed']} | {r['encoder']} | {r['epochs_run']} | {r['best_val_dice']:.4f} "
                     f"({r['best_epoch']}) | {r['test_a_dice']:.4f} | {r['fit_s']} | {r['tune_s']} | "
                     f"{r['predict_s']} | {r['score_s']} |")
    by_model: dict[str, list[float]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r["test_a_dice"])
    for model, scores in by_model.items():
        mean = sum(scores) / len(scores)
        spread = (sum((s - mean) ** 2 for s in scores) / max(len(scores) - 1, 1)) ** 0.5
        lines.append(f"\n{model}: test_a {mean:.4f} ± {spread:.4f} over {len(scores)} seed(s), "
                     f"min {min(scores):.4f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="attunet,unet,deeplabv3plus")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("/tmp/first-run"))
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "tfds"
    if not (data_dir / "tianchi_buildings").exists():
        _, seconds = timed(["buildings", "data", "build", "--manual-dir", str(BARNARP), "--config", "val10",
                            "--data-dir", str(data_dir)], out / "build.log")
        print(json.dumps({"data_build_s": round(seconds)}), flush=True)
    rows_file = out / "rows.jsonl"
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.exists() else []
    done = {(r["model"], r["seed"]) for r in rows}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for model in args.models.split(","):
            if (model, seed) in done:
                continue
            row = run_one(model, seed, out, data_dir)
            rows.append(row)
            with open(rows_file, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
