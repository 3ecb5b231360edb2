"""Benchmark (not a test): ``buildings serve`` under concurrent 512x512 uploads (issue 25).

Starts ``buildings serve`` on a free 127.0.0.1 port (a subprocess, its log in a temporary folder) and,
for 1, 20 and 200 concurrent clients, each posting JPEGs of synthetic 512x512 scenes
(``data.synth``; every request's bytes differ, so the server's cache of recent probabilities never
answers), measures: requests served per second, p50/p99 latency of the served ones, how many were
refused 503 (queue full, with Retry-After) and how fast, ``GET /health`` p50/p99 from a client polling
it every 50 ms meanwhile, and the server's resident memory (peak VmHWM from /proc). Prints markdown.

Two configurations by default:

* ``default``: the served defaults (1 worker slot, ``--queue 8``) with a U-Net (filters 8, random
  weights: the speed does not depend on them), the model doing real work; past the queue, 503 at once.
* ``all-admitted``: ``--queue 256`` with the brightness model of tests/helpers.py (one 1x1
  convolution): every request is admitted and served, so the figures are the server's own cost
  (HTTP, multipart, decoding, the rule, encoding) at the concurrency given.

Each level is bounded: ``--rounds`` requests per client at 1, 20, 200 clients (default 10, 2, 1) and no
new request after ``--level-seconds`` (default 120) of a level.

    python experiments/bench_serve.py [--configs default,all-admitted] [--levels 1,20,200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import cv2  # noqa: E402
import numpy as np  # noqa: E402

CONFIGS = {  # name: (model, serve flags)
    "default": ("unet8", []),
    "all-admitted": ("brightness", ["--queue", "256"]),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}


def make_checkpoint(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.keras"
    if kind == "brightness":
        from helpers import brightness_model

        return brightness_model(path)
    from buildings.models import build_model

    build_model("unet", filters=8).save(path)
    return path


def start(checkpoint: Path, flags: list[str], folder: Path):
    port = free_port()
    log = open(folder / f"serve-{port}.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "buildings.cli", "serve", "--checkpoint", str(checkpoint),
                                "--port", str(port), *flags], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "KERAS_BACKEND": "torch"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return process, url, log
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit("serve did not start: " + (folder / f"serve-{port}.log").read_text()[-2000:]) from None
            time.sleep(0.25)


def bodies(count: int, seed: int) -> list[tuple[bytes, str]]:
    """``count`` distinct multipart bodies, each a JPEG of a 512x512 synthetic scene."""
    from buildings.data.synth import synth_scene

    rng = np.random.default_rng(seed)
    scenes = [synth_scene(rng, 512, p_empty=0.0)[0] for _ in range(min(count, 16))]
    out = []
    for index in range(count):
        image = scenes[index % len(scenes)].copy()
        image[0, :8, 0] = np.frombuffer(index.to_bytes(8, "little"), np.uint8)  # unique bytes, same scene
        data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s{index}.jpg\"\r\n"
                "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        out.append((body, f"multipart/form-data; boundary={boundary}"))
    return out


def post(url: str, body: bytes, kind: str) -> tuple[int, float]:
    request = urllib.request.Request(url + "/predict?format=rle", data=body, method="POST",
                                     headers={"Content-Type": kind})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        err.read()
        status = err.code
    except OSError:
        status = 0  # connection refused / reset / timed out
    return status, time.monotonic() - started


def percentile(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def level(url: str, pid: int, clients: int, rounds: int, seconds: float, seed: int) -> dict:
    work = bodies(clients * rounds, seed)
    results, lock = [], threading.Lock()
    stop_issuing = time.monotonic() + seconds

    def client(index: int):
        for r in range(rounds):
            if time.monotonic() > stop_issuing:
                return
            body, kind = work[index * rounds + r]
            outcome = post(url, body, kind)
            with lock:
                results.append(outcome)

    health, health_codes, done = [], {}, threading.Event()
    peak = [memory(pid)["VmRSS"]]

    def poll():
        while not done.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(url + "/health", timeout=30) as response:
                    response.read()
                    code = response.status
            except urllib.error.HTTPError as err:
                code = err.code
            except OSError:
                code = 0
            health.append(time.monotonic() - started)
            health_codes[code] = health_codes.get(code, 0) + 1
            peak.append(memory(pid)["VmRSS"])
            done.wait(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    started = time.monotonic()
    poller.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 660)
    wall = time.monotonic() - started
    done.set()
    poller.join(timeout=60)
    served = [t for s, t in results if s == 200]
    busy = [t for s, t in results if s == 503]
    other = sorted({s for s, _ in results} - {200, 503})
    return {"clients": clients, "requests": len(results), "served": len(served), "refused_503": len(busy),
            "other": other, "wall_s": wall, "rps": len(served) / wall if wall else 0.0,
            "p50": percentile(served, 50), "p99": percentile(served, 99), "p50_503": percentile(busy, 50),
            "p99_503": percentile(busy, 99), "health_p50": percentile(health, 50),
            "health_p99": percentile(health, 99), "health_n": len(health), "health_codes": health_codes,
            "rss_peak": max(peak), "hwm": memory(pid)["VmHWM"]}


def versions() -> str:
    import fastapi
    import keras
    import torch
    import uvicorn

    return (f"Python {platform.python_version()}, torch {torch.__version__}, keras {keras.__version__}, "
            f"fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="default,all-admitted")
    parser.add_argument("--levels", default="1,20,200")
    parser.add_argument("--rounds", default="10,2,1", help="requests per client at each level")
    parser.add_argument("--level-seconds", type=float, default=120.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    rounds = [int(x) for x in args.rounds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.configs.split(","):
            model, flags = CONFIGS[name]
            checkpoint = make_checkpoint(model, folder)
            process, url, log = start(checkpoint, flags, folder)
            try:
                idle = memory(process.pid)["VmRSS"]
                for index, clients in enumerate(levels):
                    figures = level(url, process.pid, clients, rounds[min(index, len(rounds) - 1)],
                                    args.level_seconds, seed=index)
                    rows.append({"config": name, "model": model, "flags": " ".join(flags) or "(defaults)",
                                 "idle_rss": idle, **figures})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            finally:
                process.terminate()
                process.wait(timeout=60)
                log.close()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    mb = 1 << 20

    def ms(seconds: float) -> str:
        return "–" if seconds != seconds else f"{seconds * 1000:.0f} ms"

    print(f"{versions()}; {os.cpu_count()} CPUs\n")
    print("| config | model | clients | requests | served | 503 | served/s | p50 | p99 | 503 p99 | /health p50 | "
          "/health p99 (n) | server RSS idle → peak |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        other = f" (+{r['other']})" if r["other"] else ""
        codes = "" if set(r["health_codes"]) == {200} else f" codes {r['health_codes']}"
        print(f"| {r['config']} | {r['model']} | {r['clients']} | {r['requests']}{other} | {r['served']} | "
              f"{r['refused_503']} | {r['rps']:.2f} | {r['p50']:.2f} s | {r['p99']:.2f} s | "
              f"{ms(r['p99_503'])} | {r['health_p50'] * 1000:.1f} ms | {r['health_p99'] * 1000:.1f} ms "
              f"({r['health_n']}){codes} | {r['idle_rss'] / mb:.0f} → {r['hwm'] / mb:.0f} MB |")


if __name__ == "__main__":
    main()
