"""Offline training: from a labelled or unlabelled series to a model directory the worker serves.

Needs the ``train`` extra (PyTorch, onnx, scikit-learn, matplotlib).  :mod:`.transforms` and
:mod:`.nets` define the networks, :mod:`.wgan` trains them, :mod:`.calibration` sets the static
threshold, :mod:`.export` and :mod:`.onnx_graph` write the fused ONNX graph and its card, and
:mod:`.fit` runs all of it on one series.  :mod:`.evaluation` and :mod:`.plots` measure and
draw detection quality offline.  The runtime never imports this package.
"""
