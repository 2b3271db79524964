"""The model card: the JSON beside ``model.onnx`` that is all the worker needs to know.

A model directory is ``models/<name>/<version>/`` with ``model.onnx`` and ``model.json``.
The card records the channels and their order, window and stride, transform,
normalisation statistics, thresholds and how they were calibrated, training data summary,
validation metrics, library versions and the SHA-256 of ``model.onnx``.  Loading checks
that hash, so a swapped or tampered graph is refused rather than silently served.
No torch here: the worker imports this module.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from .errors import ModelLoadError

FORMAT_VERSION = 1
REQUIRED = ("format_version", "name", "version", "channels", "window", "stride", "transform",
            "normalisation", "threshold", "onnx_sha256")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_card(model_dir: Path, card: dict) -> dict:
    """Stamp the card with the format version and ``model.onnx``'s hash and write ``model.json``."""
    model_dir = Path(model_dir)
    card = dict(card, format_version=FORMAT_VERSION, onnx_sha256=sha256_file(model_dir / "model.onnx"))
    (model_dir / "model.json").write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    return card


def load_card(model_dir: Path | str) -> dict:
    """Read and check a model directory's card; :class:`ModelLoadError` says what is wrong."""
    model_dir = Path(model_dir)
    onnx_path, card_path = model_dir / "model.onnx", model_dir / "model.json"
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory not found: {model_dir}")
    for p in (onnx_path, card_path):
        if not p.is_file():
            raise ModelLoadError(f"{model_dir}: missing {p.name}; a model directory holds model.onnx and model.json")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{card_path}: not valid JSON ({e})") from None
    if not isinstance(card, dict):
        raise ModelLoadError(f"{card_path}: expected a JSON object")
    missing = [k for k in REQUIRED if k not in card]
    if missing:
        raise ModelLoadError(f"{card_path}: missing keys {', '.join(missing)}")
    if card["format_version"] != FORMAT_VERSION:
        raise ModelLoadError(f"{card_path}: card format {card['format_version']} not supported (expected {FORMAT_VERSION})")
    actual = sha256_file(onnx_path)
    if actual != card["onnx_sha256"]:
        raise ModelLoadError(
            f"{model_dir}: model.onnx does not match its card (SHA-256 {actual[:12]}... != {card['onnx_sha256'][:12]}...); "
            "refusing to load a graph that may have been changed. Re-export the model or restore the file.")
    _check_fields(card, card_path)
    return card


def _check_fields(card: dict, card_path: Path) -> None:
    """The fields the worker relies on have the types it expects (a hand-edited card fails here,
    at load, with the field named, not later inside the stream)."""
    chans = card["channels"]
    if not isinstance(chans, list) or not chans or not all(isinstance(c, str) and c for c in chans) \
            or len(set(chans)) != len(chans):
        raise ModelLoadError(f"{card_path}: 'channels' must be a non-empty list of distinct names")
    for key in ("window", "stride"):
        if isinstance(card[key], bool) or not isinstance(card[key], int) or card[key] <= 0:
            raise ModelLoadError(f"{card_path}: '{key}' must be a positive integer, got {card[key]!r}")
    thr = card["threshold"]
    if not isinstance(thr, dict) or not all(isinstance(thr.get(k), (int, float)) and math.isfinite(thr[k])
                                            for k in ("value", "release")):
        raise ModelLoadError(f"{card_path}: threshold must hold finite 'value' and 'release'")
    from .adaptive import make_threshold

    try:
        make_threshold({"method": "quantile", **thr}, int(card["stride"]))
    except ValueError as e:
        raise ModelLoadError(f"{card_path}: threshold: {e}") from None
