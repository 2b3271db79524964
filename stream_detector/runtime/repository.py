"""The model repository and the routes from sources to models.

**Repository** (NVIDIA Triton's layout): ``DIR/<name>/<version>/model.onnx`` + ``model.json``,
versions being positive integers.  For each name the worker serves the *highest complete*
version: both files present, a card that validates and an ONNX file whose SHA-256 matches
the card (:func:`~stream_detector.runtime.card.load_card`).  A version directory that fails is
*refused*: logged once and counted in ``stream_detector_model_versions_refused_total``, and the
next lower good version keeps serving; it is checked again only when one of its files changes
(a version still being copied in is refused, then picked up on a later poll once complete).
``model_dir`` in the config is the one-model shorthand: a repository of that one directory.

**Routes**: an ordered list of ``{sources: PATTERN, model: NAME}``; the first route whose
pattern matches the source id wins.  ``PATTERN`` is a shell glob (``A-*``, ``tail-??``) or,
prefixed with ``re:``, a regular expression matched against the whole id (``re:[AE]-\\d+``).
A catch-all ``{sources: "*", model: NAME}`` at the end is the default.  A route may override
the model card's threshold (``threshold: {method: telemanom, ...}``) and the stride.  With no
routes and exactly one model every source goes to it; otherwise a source no route matches is
a dead letter with reason ``no_model``.

Nothing here touches Kafka or ONNX Runtime: :class:`ModelRepository` finds and validates
versions, :class:`Routes` maps ids to names; the detector loads the sessions.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import metrics
from .card import load_card
from ..errors import ModelLoadError, UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersion:
    """One complete, verified version directory."""

    name: str
    version: int
    path: Path
    card: dict = field(compare=False, repr=False)


def _signature(version_dir: Path) -> tuple:
    """What must change before a refused version is looked at again."""
    sig = []
    for f in ("model.onnx", "model.json"):
        try:
            st = (version_dir / f).stat()
            sig.append((st.st_mtime_ns, st.st_size))
        except OSError:
            sig.append(None)
    return tuple(sig)


class ModelRepository:
    """Finds the servable version of every model name under ``root``.

    ``single`` (a ``model_dir``) makes a one-model repository of that directory: its name is
    the card's, its version the card's (an integer when the card's version is one, else 1).
    """

    def __init__(self, root: str | Path | None = None, single: str | Path | None = None):
        if (root is None) == (single is None):
            raise ValueError("give a repository root or a single model directory")
        self.root = Path(root) if root is not None else None
        self.single = Path(single) if single is not None else None
        self._refused: dict[Path, tuple] = {}  # version dir -> file signature when refused
        self._good: dict[Path, tuple[tuple, ModelVersion]] = {}  # version dir -> (signature, loaded)

    def check(self) -> None:
        """Raise :class:`UserError` when the repository cannot serve anything at all (start-up)."""
        if self.single is not None:
            load_card(self.single)  # raises ModelLoadError with the reason
            return
        if not self.root.is_dir():
            raise UserError(f"model_repository {self.root}: no such directory")
        if not self.scan():
            raise UserError(f"model_repository {self.root}: no servable model (expected "
                            f"<name>/<version>/model.onnx + model.json with integer versions)")

    def scan(self) -> dict[str, ModelVersion]:
        """The highest complete version of each name, now.  Cheap when nothing changed: a
        version already verified or refused is re-read only if its files changed."""
        if self.single is not None:
            mv = self._verify(self.single, None, None)
            return {mv.name: mv} if mv else {}
        out: dict[str, ModelVersion] = {}
        try:
            names = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError as e:
            log.warning("model repository %s cannot be read (%s); keeping the models already served", self.root, e)
            return out
        for name_dir in names:
            versions = sorted((int(p.name), p) for p in name_dir.iterdir() if p.is_dir() and p.name.isdigit()
                              and int(p.name) > 0)
            for version, path in reversed(versions):  # highest first; stop at the first good one
                mv = self._verify(path, name_dir.name, version)
                if mv is not None:
                    out[mv.name] = mv
                    break
        return out

    def _verify(self, path: Path, name: str | None, version: int | None) -> ModelVersion | None:
        sig = _signature(path)
        known = self._good.get(path)
        if known and known[0] == sig:
            return known[1]
        if self._refused.get(path) == sig:
            return None
        try:
            card = load_card(path)
            card_name = card.name
            if name is not None and card_name != name:
                # The folder decides the route name; a card naming another model is a packaging
                # mistake worth a line, not a refusal.
                log.info("model %s version %s: card names %r; served as %r", name, version, card_name, name)
            if version is None:
                v = card.version
                version = int(v) if v.isdigit() else 1
            mv = ModelVersion(name or card_name, version, path, card)
        except ModelLoadError as e:
            self._refused[path] = sig
            self._good.pop(path, None)
            metrics.MODEL_VERSIONS_REFUSED.labels(name or path.name).inc()
            log.warning("model version refused, the previous version keeps serving: %s", e)
            return None
        self._refused.pop(path, None)
        self._good[path] = (sig, mv)
        return mv


# -- routes ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    """One entry of ``routes``: which sources, which model, optional overrides."""

    pattern: str
    model: str
    threshold: dict | None = None
    stride: int | None = None

    def to_dict(self) -> dict:
        """The config form (``routes:`` entry) of this route."""
        d = {"sources": self.pattern, "model": self.model}
        if self.threshold:
            d["threshold"] = self.threshold
        if self.stride:
            d["stride"] = self.stride
        return d

    def matches(self, source: str) -> bool:
        return bool(self._regex.fullmatch(source))

    @property
    def _regex(self) -> re.Pattern:
        cached = _COMPILED.get(self.pattern)
        if cached is None:
            text = self.pattern[3:] if self.pattern.startswith("re:") else fnmatch.translate(self.pattern)
            cached = _COMPILED[self.pattern] = re.compile(text)
        return cached


_COMPILED: dict[str, re.Pattern] = {}
ROUTE_KEYS = {"sources", "model", "threshold", "stride"}


def parse_routes(raw: Any) -> list[Route]:
    """``routes`` from the config; raises ``ValueError`` with the entry and key at fault."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("a non-empty list of {sources: PATTERN, model: NAME}")
    routes = []
    for i, entry in enumerate(raw):
        where = f"entry {i + 1}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping {{sources: PATTERN, model: NAME}}, got {entry!r}")
        unknown = set(entry) - ROUTE_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                             f"(known: {', '.join(sorted(ROUTE_KEYS))})")
        for key in ("sources", "model"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ValueError(f"{where}: '{key}' must be a non-empty string")
        pattern = entry["sources"].strip()
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as e:
                raise ValueError(f"{where}: 'sources' is not a valid regular expression ({e})") from None
        thr = entry.get("threshold")
        if thr is not None and (not isinstance(thr, dict) or not isinstance(thr.get("method"), str)):
            raise ValueError(f"{where}: 'threshold' must be a mapping with a 'method'")
        stride = entry.get("stride")
        if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or stride <= 0):
            raise ValueError(f"{where}: 'stride' must be a positive integer")
        routes.append(Route(pattern, entry["model"].strip(), thr, stride))
    return routes


class Routes:
    """First-match routing of source ids to model names, cached per source id."""

    def __init__(self, routes: list[Route] | None):
        self.routes = list(routes or [])
        self._cache: dict[str, Route | None] = {}

    def route(self, source: str, served: dict[str, Any]) -> Route | None:
        """The route of ``source``; with no routes configured and one model served, that model."""
        if not self.routes:
            return Route("*", next(iter(served))) if len(served) == 1 else None
        if source in self._cache:
            return self._cache[source]
        hit = next((r for r in self.routes if r.matches(source)), None)
        if len(self._cache) < 100_000:  # bounded: a flood of distinct ids must not grow memory
            self._cache[source] = hit
        return hit
