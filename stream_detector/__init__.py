"""stream-detector: streaming anomaly detection for multivariate telemetry on Kafka.

Offline (needs the ``train`` extra, i.e. PyTorch): train a WGAN-GP with an encoder on
normal telemetry and export one ONNX graph from raw windows to anomaly scores, with a
model card.  Online (no PyTorch): Faust agents window each source's points, score the
windows with ONNX Runtime and publish scores, alert episodes and Prometheus metrics.
"""

__version__ = "0.1.0"
