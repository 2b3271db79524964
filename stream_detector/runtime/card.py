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
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ..errors import ModelLoadError

FORMAT_VERSION = 1
REQUIRED = ("format_version", "name", "version", "channels", "window", "stride", "transform",
            "normalisation", "threshold", "onnx_sha256")


@dataclass(frozen=True)
class ModelCard:
    """The card, typed and validated once: training builds it, :func:`write_card` stamps and
    writes it, and the scorer, the worker, the demo and the benchmarks read it through
    :func:`load_card`.  The fields the worker acts on are attributes; the record of how the
    model came to be (training, validation, graph, libraries, score formula) is kept as written.
    """

    name: str
    version: str
    channels: tuple[str, ...]
    window: int
    stride: int
    transform: str
    normalisation: dict
    threshold: dict  # method, value, release, the method's parameters, the calibration
    allow_imputation: bool = False
    plot_size: int | None = None
    created: str = ""
    score: dict = field(default_factory=dict)
    graph: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    libraries: dict = field(default_factory=dict)
    onnx_sha256: str = ""
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept on rewrite

    @property
    def threshold_method(self) -> str:
        return str(self.threshold.get("method", "quantile"))

    @classmethod
    def from_dict(cls, d: dict, where: str = "model card") -> ModelCard:
        """Validate ``d`` (a card as JSON-decoded); :class:`ModelLoadError` names the field at fault."""
        if not isinstance(d, dict):
            raise ModelLoadError(f"{where}: expected a JSON object")
        missing = [k for k in REQUIRED if k not in d]
        if missing:
            raise ModelLoadError(f"{where}: missing keys {', '.join(missing)}")
        if d["format_version"] != FORMAT_VERSION:
            raise ModelLoadError(f"{where}: card format {d['format_version']} not supported (expected {FORMAT_VERSION})")
        chans = d["channels"]
        if not isinstance(chans, list) or not chans or not all(isinstance(c, str) and c for c in chans) \
                or len(set(chans)) != len(chans):
            raise ModelLoadError(f"{where}: 'channels' must be a non-empty list of distinct names")
        for key in ("window", "stride"):
            if isinstance(d[key], bool) or not isinstance(d[key], int) or d[key] <= 0:
                raise ModelLoadError(f"{where}: '{key}' must be a positive integer, got {d[key]!r}")
        thr = d["threshold"]
        if not isinstance(thr, dict) or not all(isinstance(thr.get(k), (int, float)) and math.isfinite(thr[k])
                                                for k in ("value", "release")):
            raise ModelLoadError(f"{where}: threshold must hold finite 'value' and 'release'")
        from .thresholds import make_threshold

        try:
            make_threshold({"method": "quantile", **thr}, d["stride"])
        except ValueError as e:
            raise ModelLoadError(f"{where}: threshold: {e}") from None
        if not isinstance(d["normalisation"], dict):
            raise ModelLoadError(f"{where}: 'normalisation' must be a mapping")
        known = {f.name for f in fields(cls)} - {"extra"}
        kw = {k: v for k, v in d.items() if k in known}
        kw.update(name=str(d["name"]), version=str(d["version"]), channels=tuple(chans),
                  transform=str(d["transform"]), allow_imputation=bool(d.get("allow_imputation", False)))
        return cls(**kw, extra={k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict:
        """The JSON form (the order a reader expects: identity, data contract, threshold, record)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "format_version",
                                                                                  "onnx_sha256")}
        d["channels"] = list(self.channels)
        d.update(self.extra)
        d.update(format_version=self.format_version, onnx_sha256=self.onnx_sha256)
        return d

    def with_threshold(self, spec: dict) -> ModelCard:
        return replace(self, threshold=dict(spec))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_card(model_dir: Path, card: ModelCard) -> ModelCard:
    """Stamp the card with the format version and ``model.onnx``'s hash and write ``model.json``."""
    model_dir = Path(model_dir)
    card = replace(card, format_version=FORMAT_VERSION, onnx_sha256=sha256_file(model_dir / "model.onnx"))
    ModelCard.from_dict(card.to_dict(), str(model_dir / "model.json"))  # never write a card that cannot be read
    (model_dir / "model.json").write_text(json.dumps(card.to_dict(), indent=2, sort_keys=False) + "\n")
    return card


def load_card(model_dir: Path | str) -> ModelCard:
    """Read and check a model directory's card; :class:`ModelLoadError` says what is wrong."""
    model_dir = Path(model_dir)
    onnx_path, card_path = model_dir / "model.onnx", model_dir / "model.json"
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory not found: {model_dir}")
    for p in (onnx_path, card_path):
        if not p.is_file():
            raise ModelLoadError(f"{model_dir}: missing {p.name}; a model directory holds model.onnx and model.json")
    try:
        raw = json.loads(card_path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{card_path}: not valid JSON ({e})") from None
    card = ModelCard.from_dict(raw, str(card_path))
    actual = sha256_file(onnx_path)
    if actual != card.onnx_sha256:
        raise ModelLoadError(
            f"{model_dir}: model.onnx does not match its card (SHA-256 {actual[:12]}... != {card.onnx_sha256[:12]}...); "
            "refusing to load a graph that may have been changed. Re-export the model or restore the file.")
    return card
