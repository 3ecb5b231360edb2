"""buildings bench: one row per backend, from the same weights and batches, and they agree."""

import json

import pytest
from click.testing import CliRunner

from buildings.benchmark import PLAIN_TORCH, installed_backends, run_bench
from buildings.cli import main


@pytest.mark.slow
def test_bench_rows_for_every_installed_backend_agree_on_the_loss():
    """Also torch without the package's torch speed-ups: they change the speed, not the numbers."""
    backends = [*installed_backends(), PLAIN_TORCH]
    rows = run_bench("unet", model_options={"filters": 4, "depth": 2}, image_size=64, batch_size=2, steps=3,
                     backends=backends)
    assert [r["backend"] for r in rows] == backends
    for r in rows:
        assert r["train_images_per_s"] > 0 and r["infer_images_per_s"] > 0
        assert r["step_p90_s"] >= r["step_p50_s"] > 0 and r["first_step_s"] > 0 and r["peak_memory_mb"] > 0
    first = [r["loss_first"] for r in rows]
    last = [r["loss_last"] for r in rows]
    # same initial weights, same batches: the backends compute the same thing
    assert max(first) - min(first) < 1e-3 * max(first)
    assert max(last) - min(last) < 2e-2 * max(last)
    assert all(r["loss_last"] < r["loss_first"] for r in rows)  # and it trains


def test_bench_cli_refuses_a_missing_backend(monkeypatch):
    import buildings.benchmark as bench

    monkeypatch.setattr(bench, "installed_backends", lambda: ["torch"])
    result = CliRunner().invoke(main, ["bench", "--backends", "torch,jax", "--steps", "2"])
    assert result.exit_code == 1 and "not installed: ['jax']" in result.output
    result = CliRunner().invoke(main, ["bench", "--backends", "torch,pytorch", "--steps", "2"])
    assert result.exit_code == 1 and "unknown backend(s) ['pytorch']" in result.output
    result = CliRunner().invoke(main, ["bench", "--backends", "torch", "--model-option", "filters=4",
                                       "--model-option", "depth=1", "--image-size", "32", "--batch-size", "1",
                                       "--steps", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["backend"] == "torch"
