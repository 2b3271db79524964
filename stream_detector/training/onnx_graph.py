"""The scorer graph re-expressed for ONNX Runtime's fast CPU kernels (the sequence conv models).

PyTorch exports the 1-D networks of ``nets.py`` as ``Conv``/``ConvTranspose`` over
``[batch, C, L]``.  ONNX Runtime's CPU provider runs a 1-D convolution as one small GEMM
*per window* (im2col, then ``[C_out, C_in*4] x [C_in*4, L_out]`` with ``L_out`` 4 to 32), so
the small production model spent its time in per-window GEMMs of a few columns: 127 µs a
window, 15 GFLOP/s, whatever the batch (issue 14; ``docs/benchmarks/inference.md`` has the
per-node profile).  This module writes the same function in a form that ONNX Runtime runs
fast, from the same weights:

* every ``Conv1d`` becomes a ``Conv`` over ``[batch, C, 1, L]`` (kernel ``1x4``): ONNX
  Runtime's NCHWc layout transformer (graph optimisation level ``ORT_ENABLE_ALL``, the
  default) only takes 2-D convolutions, and its blocked kernels run the whole batch at once;
* every ``ConvTranspose1d`` (kernel 4, stride 2, padding 1) becomes two ordinary ``Conv``
  (kernel ``1x2``), one per output phase: output ``2t`` is ``x[t-1] w3 + x[t] w1`` (padding
  on the left) and ``2t+1`` is ``x[t] w2 + x[t+1] w0`` (padding on the right); the phases are
  then interleaved by a concat, a reshape and a transpose.  The same multiply-adds as the
  transposed convolution, none on zeros (one ``1x3`` convolution with ``2*C_out`` outputs and
  zero taps did 1.5x the work and measured 5-7 % slower);
* the generator's eval-mode batch norm is folded into those weights and biases;
* the critic's feature trunk runs once on ``[x; G(E(x))]`` (twice the batch) instead of
  twice;
* normalisation is one multiply and one add.

Inputs, outputs, names and shapes are those of the plain export (``window [batch, W, C]`` to
``score``, ``channel_scores``, ``transformed``, ``reconstruction``, ``cell_scores``,
``critic_score``; the score of the card's kind), so nothing else changes;
the results agree with the plain graph to float32 rounding (relative differences around
1e-6), and :func:`check_same_outputs` proves it for each graph written: the export and
:func:`optimise_model_dir` refuse to write a graph that does not agree.  The ONNX metadata
key ``stream_detector.graph_form`` names the form (``plain`` when absent).

Needs the ``onnx`` package (the ``train`` extra); the worker only runs the result.
``python -m stream_detector.training.onnx_graph MODEL_DIR...`` rewrites existing model directories in
place (their cards get the new SHA-256; thresholds are kept: the scores are the same).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

FORM_KEY = "stream_detector.graph_form"
FORM = "sequence-conv2d-v1"
PLAIN = "plain"
LEAKY_SLOPE = 0.2  # nets._ConvTrunk
RTOL, ATOL = 1e-4, 1e-5  # fast against plain, on every output
OUTPUT_NAMES = ("score", "channel_scores", "transformed", "reconstruction", "cell_scores", "critic_score")  # export.OUTPUTS


class NotApplicable(ValueError):
    """The graph is not a sequence-transform conv scorer; it stays as exported."""


class GraphMismatch(RuntimeError):
    """The re-expressed graph does not compute what the plain one does (a bug: never written)."""


# -- reading weights ---------------------------------------------------------------------------
def params_from_onnx(model) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Initializers by name (the PyTorch ``state_dict`` names the exporter keeps) and the
    batch-norm epsilon of each ``BatchNormalization`` by its weight's name."""
    from onnx import numpy_helper

    params = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    eps = {}
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            e = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            eps[node.input[1]] = float(e)
    return params, eps


def params_from_torch(scorer) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The same from an ``export.ScoringNetwork`` (the exporter's initializer names are these)."""
    import torch

    params = {k: v.detach().cpu().numpy() for k, v in scorer.state_dict().items() if v.dtype != torch.int64}
    eps = {f"{name}.weight": float(m.eps) for name, m in scorer.named_modules()
           if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    return params, eps


def state_dict_params(model) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """PyTorch ``state_dict`` entries (and batch-norm epsilons) that compute what ``model`` does,
    from a plain export or from the fast form: the inverse of :func:`sequence_conv_graph`, so
    that a model directory holding only the fast form can still be exported plainly (the
    benchmark's "before") or loaded into PyTorch.  The generator's batch norm was folded into
    the fast form's weights; it comes back as an identity (mean 0, variance ``1 - eps``)."""
    params, eps = params_from_onnx(model)
    if graph_form_of_model(model) == PLAIN:
        return params, eps
    out: dict[str, np.ndarray] = {}
    for name, value in params.items():
        base, _, how = name.partition(":")
        if how == "1x4":
            out[base] = value[:, :, 0, :]
        elif how == "column":
            out[base] = value[:, 0]
        elif how in ("even", "odd", "folded"):
            out[f"{base}:{how}"] = value
        elif not how and name.startswith(("encoder.", "generator.", "critic.", "score_")):
            out[name] = value
    scale = out.pop("transform.normalise.scale").astype(np.float64)
    shift = out.pop("transform.normalise.shift").astype(np.float64)
    out["transform.normalise.scale"] = scale.astype(np.float32)
    out["transform.normalise.offset"] = (-(shift + 1.0) / scale).astype(np.float32)
    eps = {}
    for k in sorted({int(n.split(".")[2]) for n in out if n.endswith(".weight:even")}):
        even, odd = out.pop(f"generator.net.{k}.weight:even"), out.pop(f"generator.net.{k}.weight:odd")
        c_out = even.shape[0]
        w = np.empty((even.shape[1], c_out, 4), np.float32)  # [C_in, C_out, 4], see _phase_conv_weights
        w[:, :, 3], w[:, :, 1] = even[:, :, 0, 0].T, even[:, :, 0, 1].T
        w[:, :, 2], w[:, :, 0] = odd[:, :, 0, 0].T, odd[:, :, 0, 1].T
        out[f"generator.net.{k}.weight"] = w
        out[f"generator.net.{k}.bias"] = out.pop(f"generator.net.{k}.bias:folded")
        bn = f"generator.net.{k + 1}"
        if f"generator.net.{k + 3}.weight:even" in params:
            e = 1e-5
            out.update({f"{bn}.weight": np.ones(c_out, np.float32), f"{bn}.bias": np.zeros(c_out, np.float32),
                        f"{bn}.running_mean": np.zeros(c_out, np.float32),
                        f"{bn}.running_var": np.full(c_out, 1.0 - e, np.float32)})
            eps[f"{bn}.weight"] = e
    return out, eps


def _trunk_layers(params: dict, prefix: str) -> list[int]:
    layers, i = [], 0
    while f"{prefix}.{i}.weight" in params:
        layers.append(i)
        i += 2
    return layers


def _generator_layers(params: dict) -> list[int]:
    """Indices of the transposed convolutions in ``generator.net`` (Linear, ReLU, Unflatten, then
    [ConvTranspose, BatchNorm, ReLU] * (n-1), ConvTranspose, Tanh)."""
    layers, k = [], 3
    while f"generator.net.{k}.weight" in params:
        layers.append(k)
        k += 3 if f"generator.net.{k + 1}.running_mean" in params else 2
    return layers


def applicable(params: dict) -> bool:
    """A ``conv`` scorer of 1-D sequences (kernel 4 everywhere), as ``nets.py`` builds them."""
    enc, crit = _trunk_layers(params, "encoder.trunk.body"), _trunk_layers(params, "critic.trunk.body")
    gen = _generator_layers(params)
    if not (enc and crit and gen) or "encoder.head.0.weight" not in params or "generator.net.0.weight" not in params:
        return False
    convs = [params[f"encoder.trunk.body.{i}.weight"] for i in enc]
    convs += [params[f"critic.trunk.body.{i}.weight"] for i in crit]
    deconvs = [params[f"generator.net.{k}.weight"] for k in gen]
    return all(w.ndim == 3 and w.shape[2] == 4 for w in convs + deconvs) and "transform.normalise.scale" in params


# -- building the graph ------------------------------------------------------------------------
class _Builder:
    def __init__(self):
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def const(self, value, name: str | None = None, dtype=np.float32) -> str:
        from onnx import numpy_helper

        self._n += 1
        name = name or f"c{self._n}"
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(np.asarray(value, dtype=dtype)), name))
        return name

    def ints(self, *values: int) -> str:
        return self.const(values, dtype=np.int64)

    def op(self, op_type: str, inputs: list[str], out: str | None = None, n_out: int = 1, **attrs) -> Any:
        from onnx import helper

        self._n += 1
        outs = [out] if out else [f"{op_type.lower()}{self._n}_{j}" for j in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"{op_type}_{self._n}", **attrs))
        return outs[0] if n_out == 1 else outs


def _trunk(b: _Builder, x: str, params: dict, prefix: str) -> str:
    """Strided ``Conv1d`` + LeakyReLU layers as 2-D convolutions over ``[N, C, 1, L]``."""
    for i in _trunk_layers(params, prefix):
        w = b.const(params[f"{prefix}.{i}.weight"][:, :, None, :], f"{prefix}.{i}.weight:1x4")
        bias = b.const(params[f"{prefix}.{i}.bias"], f"{prefix}.{i}.bias")
        y = b.op("Conv", [x, w, bias], kernel_shape=[1, 4], strides=[1, 2], pads=[0, 1, 0, 1])
        x = b.op("LeakyRelu", [y], alpha=LEAKY_SLOPE)
    return x


def _phase_conv_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ConvTranspose1d`` weights ``[C_in, C_out, 4]`` (stride 2, padding 1) as two ``Conv``
    weights ``[C_out, C_in, 1, 2]``: the even outputs ``2t`` over taps ``(t-1, t)``, the odd
    ones ``2t+1`` over taps ``(t, t+1)``."""
    even = np.stack([w[:, :, 3].T, w[:, :, 1].T], axis=-1)[:, :, None, :]
    odd = np.stack([w[:, :, 2].T, w[:, :, 0].T], axis=-1)[:, :, None, :]
    return even.astype(np.float32), odd.astype(np.float32)


def sequence_conv_graph(params: dict, bn_eps: dict, window: int, channels: int, kappa: float,
                        score_spec: dict | None = None, opset: int = 17):
    """The fast form (module docstring) of a sequence conv scorer from its weights; ``score_spec``
    is the card's score kind and its constants (``export.ScoringNetwork.score_spec``, default
    fanogan).  Weights without the critic's head (graphs exported before the critic score was
    an output) give a NaN ``critic_score``, as ``export.scorer_from_model_dir`` does."""
    spec = dict(score_spec or {"kind": "fanogan"})
    has_head = "critic.head.weight" in params
    if spec["kind"] != "fanogan" and not has_head:
        raise NotApplicable(f"score kind {spec['kind']!r} without the critic's head")
    from onnx import TensorProto, checker, helper

    if not applicable(params):
        raise NotApplicable("not a sequence conv scorer")
    b = _Builder()
    scale = params["transform.normalise.scale"].astype(np.float64)
    offset = params["transform.normalise.offset"].astype(np.float64)
    if scale.shape != (channels,):
        raise NotApplicable(f"normalisation for {scale.shape} channels, graph for {channels}")
    # (w - offset) * scale - 1 == w * scale + (-offset * scale - 1), per channel, after the
    # transpose: ONNX Runtime broadcasts [B, W, C] * [C] one innermost run of C values at a
    # time, which for C = 1 cost more than a convolution layer (60 us for 28 windows).
    x = b.op("Transpose", ["window"], perm=[0, 2, 1])  # [B, C, W]
    x = b.op("Mul", [x, b.const(scale[:, None], "transform.normalise.scale:column")])
    transformed = b.op("Add", [x, b.const((-offset * scale - 1.0)[:, None], "transform.normalise.shift:column")],
                       out="transformed")
    x4 = b.op("Unsqueeze", [transformed, b.ints(2)])  # [B, C, 1, W]

    feats = b.op("Flatten", [_trunk(b, x4, params, "encoder.trunk.body")], axis=1)  # c * L + l, as torch
    head = [b.const(params[n], n) for n in ("encoder.head.0.weight", "encoder.head.0.bias")]
    z = b.op("Gemm", [feats, *head], transB=1)
    z = b.op("Tanh", [z])

    layers = _generator_layers(params)
    c_cur = params[f"generator.net.{layers[0]}.weight"].shape[0]
    length = params["generator.net.0.weight"].shape[0] // c_cur
    first = [b.const(params[n], n) for n in ("generator.net.0.weight", "generator.net.0.bias")]
    h = b.op("Gemm", [z, *first], transB=1)
    h = b.op("Relu", [h])
    h = b.op("Reshape", [h, b.ints(-1, c_cur, 1, length)])
    for j, k in enumerate(layers):
        w = params[f"generator.net.{k}.weight"].astype(np.float64)
        bias = params[f"generator.net.{k}.bias"].astype(np.float64)
        last = j == len(layers) - 1
        if not last:  # fold the eval-mode batch norm that follows
            bn = f"generator.net.{k + 1}"
            s = params[f"{bn}.weight"] / np.sqrt(params[f"{bn}.running_var"] + bn_eps.get(f"{bn}.weight", 1e-5))
            w = w * s[None, :, None]
            bias = (bias - params[f"{bn}.running_mean"]) * s + params[f"{bn}.bias"]
        c_out = w.shape[1]
        even, odd = _phase_conv_weights(w)
        even, odd = b.const(even, f"generator.net.{k}.weight:even"), b.const(odd, f"generator.net.{k}.weight:odd")
        bias = b.const(bias, f"generator.net.{k}.bias:folded")
        act = "Tanh" if last else "Relu"
        y_even = b.op(act, [b.op("Conv", [h, even, bias], kernel_shape=[1, 2], pads=[0, 1, 0, 0])])
        y_odd = b.op(act, [b.op("Conv", [h, odd, bias], kernel_shape=[1, 2], pads=[0, 0, 0, 1])])
        y = b.op("Concat", [y_even, y_odd], axis=1)  # [B, 2*C_out, 1, L]: (phase, channel)
        y = b.op("Reshape", [y, b.ints(-1, 2, c_out, length)])
        y = b.op("Transpose", [y], perm=[0, 2, 3, 1])  # [B, C_out, L, phase]
        h = b.op("Reshape", [y, b.ints(-1, c_out, 1, 2 * length)])
        c_cur, length = c_out, 2 * length
    if (c_cur, length) != (channels, window):
        raise NotApplicable(f"generator makes [{c_cur}, {length}], the window is [{channels}, {window}]")
    recon = b.op("Squeeze", [h, b.ints(2)], out="reconstruction")  # [B, C, W]

    res = b.op("Sub", [transformed, recon])
    res2 = b.op("Mul", [res, res])
    if "score_weights" in params:  # conditioned: A_R and the root cause over the scored channels only
        mask = params["score_mask"].astype(np.float32)
        per_channel = b.op("ReduceMean", [res2], axes=[2], keepdims=0)
        a_r = b.op("ReduceSum", [b.op("Mul", [per_channel, b.const(params["score_weights"], "score_weights")]),
                                 b.ints(1)], keepdims=0)
        b.op("Mul", [res2, b.const(mask[:, None], "score_mask:column")], out="cell_scores")
        channel_scores = b.op("Mul", [per_channel, b.const(mask, "score_mask")], out="channel_scores")
    else:
        b.op("Identity", [res2], out="cell_scores")  # sequences: the residual is on the window's own cells
        channel_scores = b.op("ReduceMean", [res2], out="channel_scores", axes=[2], keepdims=0)
        a_r = b.op("ReduceMean", [channel_scores], axes=[1], keepdims=0)

    both = b.op("Concat", [x4, h], axis=0)  # the critic's trunk once, on [x; G(E(x))]
    f_both = b.op("Flatten", [_trunk(b, both, params, "critic.trunk.body")], axis=1)
    f_x, f_r = b.op("Split", [f_both], n_out=2, axis=0)
    d = b.op("Sub", [f_x, f_r])
    a_d = b.op("ReduceMean", [b.op("Mul", [d, d])], axes=[1], keepdims=0)
    fanogan = b.op("Add", [a_r, b.op("Mul", [a_d, b.const(kappa, "score.kappa")])])
    if has_head:
        head = [b.const(params[n], n) for n in ("critic.head.weight", "critic.head.bias")]
        d_x = b.op("Squeeze", [b.op("Gemm", [f_x, *head], transB=1), b.ints(1)])
        critic = b.op("Neg", [d_x], out="critic_score")
    else:
        critic = b.op("Add", [b.op("Mul", [a_r, b.const(0.0)]), b.const(float("nan"))], out="critic_score")
    if spec["kind"] == "fanogan":
        b.op("Identity", [fanogan], out="score")
    elif spec["kind"] == "critic":
        b.op("Identity", [critic], out="score")
    elif spec["kind"] == "combined":
        scale = float(spec["critic_scale"])
        shifted = b.op("Add", [b.op("Mul", [critic, b.const(scale, "score.critic_scale")]),
                               b.const(-scale * float(spec["critic_mean"]), "score.critic_shift")])
        b.op("Add", [fanogan, shifted], out="score")
    else:
        raise NotApplicable(f"unknown score kind {spec['kind']!r}")

    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        b.nodes, "stream_detector_scorer", [helper.make_tensor_value_info("window", f32, ["batch", window, channels])],
        [helper.make_tensor_value_info("score", f32, ["batch"]),
         helper.make_tensor_value_info("channel_scores", f32, ["batch", channels]),
         helper.make_tensor_value_info("transformed", f32, ["batch", channels, window]),
         helper.make_tensor_value_info("reconstruction", f32, ["batch", channels, window]),
         helper.make_tensor_value_info("cell_scores", f32, ["batch", channels, window]),
         helper.make_tensor_value_info("critic_score", f32, ["batch"])],
        b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="stream-detector")
    model.ir_version = 8  # readable by every onnxruntime the project accepts (>= 1.18)
    helper.set_model_props(model, {FORM_KEY: FORM})
    checker.check_model(model)
    return model


# -- checking and writing ----------------------------------------------------------------------
def probe_windows(params: dict, window: int, channels: int, n: int = 64, seed: int = 0) -> np.ndarray:
    """Raw windows over the training range and a quarter beyond it on both sides."""
    rng = np.random.default_rng(seed)
    scale = params["transform.normalise.scale"].astype(np.float64)
    offset = params["transform.normalise.offset"].astype(np.float64)
    u = rng.uniform(-0.25, 1.25, (n, window, channels))
    return (offset + u * (2.0 / scale)).astype(np.float32)


def graph_form(session) -> str:
    """The form of a loaded ``onnxruntime.InferenceSession``'s graph (``plain`` when unmarked)."""
    try:
        return session.get_modelmeta().custom_metadata_map.get(FORM_KEY, PLAIN)
    except Exception:  # noqa: BLE001 - metadata is informative only
        return PLAIN


def check_same_outputs(plain: bytes, fast: bytes, windows: np.ndarray) -> dict[str, float]:
    """Run both graphs with ONNX Runtime (CPU) on ``windows`` and on each of its first two windows
    alone; :class:`GraphMismatch` unless every output agrees within ``RTOL``/``ATOL``.  Returns
    the largest absolute and relative differences of the score."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    a = ort.InferenceSession(plain, sess_options=opts, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(fast, sess_options=opts, providers=["CPUExecutionProvider"])
    worst = {"score_max_abs_diff": 0.0, "score_max_rel_diff": 0.0}
    names = [o.name for o in a.get_outputs()]
    for batch in (windows, windows[:1], windows[1:2]):
        ya = dict(zip(names, a.run(names, {"window": batch})))
        yb = dict(zip(names, b.run(names, {"window": batch})))
        for name in names:
            if ya[name].shape != yb[name].shape or not np.allclose(ya[name], yb[name], rtol=RTOL, atol=ATOL,
                                                                   equal_nan=True):
                diff = float(np.max(np.abs(ya[name] - yb[name]))) if ya[name].shape == yb[name].shape else float("nan")
                raise GraphMismatch(f"output {name!r}: shapes {ya[name].shape} / {yb[name].shape}, "
                                    f"max |diff| {diff:.3g}")
        d = np.abs(ya["score"] - yb["score"])
        worst["score_max_abs_diff"] = max(worst["score_max_abs_diff"], float(np.max(d)))
        worst["score_max_rel_diff"] = max(worst["score_max_rel_diff"],
                                          float(np.max(d / np.maximum(np.abs(ya["score"]), 1e-12))))
    return worst


def optimise(plain: bytes, window: int, channels: int, kappa: float,
             params_eps: tuple[dict, dict] | None = None, score_spec: dict | None = None) -> bytes:
    """The fast form of a plain exported graph, checked against it; :class:`NotApplicable` or
    :class:`GraphMismatch` otherwise.  A fast-form graph written before ``cell_scores`` and
    ``critic_score`` were outputs is rewritten from its weights with every output, checked on
    the outputs it had."""
    import onnx

    model = onnx.load_from_string(plain)
    if graph_form_of_model(model) != PLAIN and {o.name for o in model.graph.output} >= set(OUTPUT_NAMES):
        raise NotApplicable("already re-expressed")
    params, eps = params_eps or state_dict_params(model)
    fast = sequence_conv_graph(params, eps, window, channels, kappa, score_spec).SerializeToString()
    check_same_outputs(plain, fast, probe_windows(params, window, channels))
    return fast


def graph_form_of_model(model) -> str:
    return next((p.value for p in model.metadata_props if p.key == FORM_KEY), PLAIN)


def optimise_model_dir(model_dir: Path | str) -> str:
    """Rewrite ``model_dir/model.onnx`` in the fast form (checked against the file it replaces)
    and update the card in place: ``onnx_sha256``, ``graph.form``, ``graph.plain_onnx_sha256``
    (the plain graph it was first rewritten from) and ``graph.outputs``; nothing else in the card
    changes, the threshold included (the scores are the same).  A fast-form graph from before
    ``cell_scores`` and ``critic_score`` gains them (``critic_score`` NaN: those graphs do not
    carry the critic's head).  Returns what happened, in words."""
    import json

    from ..runtime.card import load_card, sha256_file

    model_dir = Path(model_dir)
    card = load_card(model_dir)  # also checks that model.onnx is the graph the card belongs to
    path, card_path = model_dir / "model.onnx", model_dir / "model.json"
    plain = path.read_bytes()
    if card.transform != "sequence":
        return f"{model_dir}: left as it is (transform {card.transform}; only sequence conv models have a fast form)"
    if card.score.get("level_weight"):
        return f"{model_dir}: left as it is (its score has a level term, which the fast form does not carry)"
    try:
        fast = optimise(plain, card.window, len(card.channels), float(card.score.get("kappa", 1.0)),
                        score_spec={"kind": "fanogan", **{k: card.score[k] for k in
                                                          ("kind", "critic_mean", "critic_scale") if k in card.score}})
    except NotApplicable as e:
        return f"{model_dir}: left as it is ({e})"
    raw = json.loads(card_path.read_text())  # edited in place: the card keeps its key order
    tmp = path.with_suffix(".onnx.tmp")
    tmp.write_bytes(fast)
    tmp.replace(path)
    graph = raw.get("graph", {})
    was_plain = graph.get("form", PLAIN) == PLAIN
    raw["graph"] = {**graph, "form": FORM,
                    "plain_onnx_sha256": raw["onnx_sha256"] if was_plain else graph.get("plain_onnx_sha256")}
    if "outputs" in graph:
        raw["graph"]["outputs"] = {**graph["outputs"], "cell_scores": ["batch", len(card.channels), card.window],
                                   "critic_score": ["batch"]}
    raw["onnx_sha256"] = sha256_file(path)
    card_path.write_text(json.dumps(raw, indent=2) + "\n")
    load_card(model_dir)
    return f"{model_dir}: rewritten in form {FORM} ({len(plain):,} -> {len(fast):,} bytes), same outputs"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stream_detector.training.onnx_graph",
                                description="Rewrite model directories' sequence conv graphs in the fast form "
                                            "(same outputs; the card's SHA-256 is updated).")
    p.add_argument("model_dirs", nargs="+")
    args = p.parse_args(argv)
    for d in args.model_dirs:
        print(optimise_model_dir(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
