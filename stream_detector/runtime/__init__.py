"""The worker runtime: everything ``stream-detector worker`` needs, and nothing else.

Importable with the base install alone (numpy, onnxruntime, faust-streaming,
prometheus-client, msgpack, pyyaml): no PyTorch, scikit-learn or matplotlib here
(``tests/test_architecture.py`` checks it in a fresh interpreter).  The stages of the data
path, one module each: :mod:`.codec` (decoding and validation), :mod:`.windowing`,
:mod:`.scoring` (ONNX Runtime), :mod:`.thresholds` and :mod:`.episodes`, :mod:`.publishing`
(the records the worker writes), :mod:`.metrics` (Prometheus); :mod:`.detector` runs them for
many models and sources, :mod:`.app` is the Faust application around it.
"""
