"""What importing costs and where nothing may reach: the command line imports no inference or
training module (nor Keras), no module of the package is in an import circle, and the library API
keeps TensorFlow out of a torch process even where TensorFlow is installed."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT, imported_after

SCRIPTS = ROOT / "tests" / "scripts"
HEAVY = ("buildings.inference", "buildings.training", "buildings.models", "buildings.geo", "keras", "torch",
         "tensorflow", "jax", "onnxruntime", "tensorflow_datasets")


FRAMEWORKS = ("keras", "torch", "tensorflow", "jax", "onnxruntime")


def frameworks(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in FRAMEWORKS)


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY))


def test_importing_the_cli_imports_no_inference_training_or_framework_module():
    modules = imported_after("buildings.cli")
    assert "buildings.cli.predict" in modules  # the probe saw the CLI's own modules
    assert heavy(modules) == []


@pytest.mark.parametrize("args", [["--help"], ["predict", "--help"], ["fit", "--help"], ["data", "build", "--help"]])
def test_help_imports_no_inference_training_or_framework_module(args):
    assert heavy(imported_after("--cli", *args)) == []


@pytest.mark.parametrize("content, message", [
    (b"not a zip at all", "not a Keras checkpoint (no zip signature"),
    (b"", "not a Keras checkpoint (no zip signature: empty)"),
])
def test_a_bad_checkpoint_is_named_before_anything_heavy_is_imported(tmp_path, content, message):
    import subprocess
    import sys

    bad = tmp_path / "model.keras"
    bad.write_bytes(content)
    done = subprocess.run([sys.executable, str(SCRIPTS / "imported_modules.py"), "--cli", "predict", "--checkpoint",
                           str(bad), "--images", str(tmp_path), "--out", str(tmp_path / "sub.csv")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "KERAS_BACKEND": "torch"})
    assert f"Error: {bad}: {message}" in done.stderr, done.stderr[-2000:]
    assert "post-processing:" not in done.stderr  # said only once a checkpoint loaded
    assert frameworks(set(json.loads(done.stdout.splitlines()[-1]))) == [] and not (tmp_path / "sub.csv").exists()


def test_a_typo_in_a_checkpoint_path_says_not_found_first(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(SCRIPTS / "imported_modules.py"), "--cli", "evaluate", "--checkpoint",
                           str(tmp_path / "modle.keras")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KERAS_BACKEND": "torch"})
    assert done.stderr.strip().splitlines()[-1] == f"Error: {tmp_path / 'modle.keras'}: checkpoint not found"
    assert frameworks(set(json.loads(done.stdout.splitlines()[-1]))) == []


def test_the_probe_sees_a_heavy_import():  # the two tests above could not pass by not looking
    assert "buildings.inference.predictor" in heavy(imported_after("buildings.inference.predictor"))


def _package_imports() -> dict[str, set[str]]:
    """module -> the package modules it imports at module level (function-level imports are lazy by
    design and cannot make an import circle)."""
    package = ROOT / "buildings"
    modules = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_of_the_package_is_in_an_import_circle():
    graph = _package_imports()
    assert len(graph) > 60 and graph["buildings.inference.predictor"]  # the graph is the package's
    assert _cycles(graph) == []


def test_the_circle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.slow
def test_the_library_api_keeps_tensorflow_out_of_a_torch_process(synth_dataset, tmp_path):
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed: nothing could import it (the tf extra installs it)")
    done = subprocess.run([sys.executable, str(SCRIPTS / "library_without_tensorflow.py"), str(synth_dataset),
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "KERAS_BACKEND": "torch"})
    assert done.returncode == 0, done.stderr[-3000:]
    steps = json.loads(done.stdout.splitlines()[-1])
    assert [name for name, _ in steps] == ["save", "fit", "predict"]
    assert [name for name, imported in steps if imported] == []
