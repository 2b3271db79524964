"""The three parts stay apart: the worker runtime runs without the training and benchmark
libraries, and nothing in the product imports the benchmarks (docs/architecture.md)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "stream_detector"
TINY_MODEL = ROOT / "tests" / "data" / "tiny-sequence"
HEAVY = ("torch", "sklearn", "matplotlib", "scipy", "onnx", "tqdm")  # the train/bench extras' libraries

# Run in a fresh interpreter in which importing any of HEAVY fails, as on a runtime-only install.
_PROBE = r'''
import importlib, json, pkgutil, sys
HEAVY = set(json.loads(sys.argv[1]))

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"No module named {name!r} (refused: not in the runtime install)", name=name)
        return None

sys.meta_path.insert(0, Refuse())
import numpy as np
import stream_detector.runtime as runtime
for m in pkgutil.iter_modules(runtime.__path__):
    if m.name != "faust_app":  # builds a worker from the environment at import
        importlib.import_module(f"stream_detector.runtime.{m.name}")
from stream_detector import cli
from stream_detector.runtime.app import create_app
from stream_detector.runtime.config import WorkerConfig
from stream_detector.runtime.detector import Detector

cfg = WorkerConfig(model_dir=sys.argv[2], broker="kafka://127.0.0.1:9", metrics_port=0)
detector = Detector(cfg)
ts = np.arange(64.0)
records, _ = detector.process_points("src", ts, {c: np.sin(ts / 5 + i) for i, c in enumerate("abc")})
create_app(cfg, detector=detector)  # the Faust app, topics and agent (no broker connection yet)
try:
    cli.main(["worker", "--help"])
except SystemExit as e:
    assert e.code == 0, e.code
print(json.dumps({"records": len(records), "loaded": sorted(n for n in sys.modules if n.split(".")[0] in HEAVY)}))
'''


def test_worker_runtime_runs_without_training_or_benchmark_libraries():
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(HEAVY), str(TINY_MODEL)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert result["records"] == (64 - 16) // 4 + 1  # every window of the tiny model (W 16, stride 4) scored


def _imports(path: Path) -> list[str]:
    """Absolute names of the stream_detector modules that ``path`` imports (any depth)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    if path.name == "__init__.py":
        module = module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out += [name] + [f"{name}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return [n for n in out if n.startswith("stream_detector")]


def _modules(folder: Path, recursive: bool = True) -> list[Path]:
    return sorted(folder.rglob("*.py") if recursive else folder.glob("*.py"))


@pytest.mark.parametrize("part,forbidden", [
    ("runtime", ("stream_detector.training", "stream_detector.bench")),
    ("training", ("stream_detector.bench",)),
    ("", ("stream_detector.bench",)),  # the top level: cli, demo, broker, replay, data
])
def test_parts_import_only_downwards(part, forbidden):
    """runtime <- training <- bench: a part never imports one that depends on it, even lazily.
    Only cli.py reaches every part (inside its command functions)."""
    files = _modules(PACKAGE / part) if part else [f for f in _modules(PACKAGE, recursive=False) if f.name != "cli.py"]
    offenders = {}
    for f in files:
        bad = [n for n in _imports(f) if n.startswith(forbidden)]
        if bad:
            offenders[str(f.relative_to(ROOT))] = bad
    assert offenders == {}


def test_runtime_install_declares_only_the_runtime_libraries():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower() for d in project["dependencies"]}
    assert names.isdisjoint({"torch", "scikit-learn", "matplotlib", "onnx", "tqdm", "scipy"}), names
    train = " ".join(project["optional-dependencies"]["train"])
    assert "torch" in train and "scikit-learn" in train and "matplotlib" in train
