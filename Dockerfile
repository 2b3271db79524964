# stream-detector streaming worker, CPU image (no PyTorch: the worker only needs ONNX Runtime).
#
#   docker build -t stream-detector:cpu .
#   docker run --rm -v "$PWD/models/smap-demo/1:/models:ro" \
#       -e STREAM_DETECTOR_BROKER=kafka://kafka:9092 -p 9108:9108 stream-detector:cpu
#
# Configuration is by STREAM_DETECTOR_* environment variables (stream_detector/runtime/config.py),
# or a YAML file: `docker run ... stream-detector:cpu --config /config/worker.yml`.
# The model directory (model.onnx + model.json) is mounted at /models.
# GPU: see Dockerfile.gpu.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build: a venv with the package
FROM ${PYTHON_IMAGE} AS build
# The project depends on onnxruntime-gpu; the CPU image installs the CPU wheel instead
# (same API, a fraction of the size).  Override with --build-arg ONNXRUNTIME_PACKAGE=...
ARG ONNXRUNTIME_PACKAGE=onnxruntime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Runtime dependencies from pyproject.toml (not the train extra: no PyTorch), with
# onnxruntime-gpu swapped for ONNXRUNTIME_PACKAGE; installed first so code edits do not
# invalidate this layer.
COPY pyproject.toml ./
RUN python -c "import re, sys, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(re.sub(r'^onnxruntime-gpu', sys.argv[1], d) for d in deps))" \
        "${ONNXRUNTIME_PACKAGE}" > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt
COPY README.md ./
COPY stream_detector ./stream_detector
RUN pip install --no-cache-dir --no-deps . \
    && stream-detector --help > /dev/null

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="stream-detector" \
      org.opencontainers.image.description="Kafka-native anomaly detection worker (ONNX Runtime, CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 detector \
    && useradd --system --uid 10001 --gid detector --create-home --home-dir /home/detector detector \
    && mkdir -p /models \
    && chown detector:detector /models
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    STREAM_DETECTOR_MODEL_DIR=/models \
    STREAM_DETECTOR_METRICS_HOST=0.0.0.0 \
    STREAM_DETECTOR_METRICS_PORT=9108
USER 10001:10001
WORKDIR /home/detector
VOLUME ["/models"]
EXPOSE 9108
# Healthy = /metrics answers (it is served once the worker has started).  With
# STREAM_DETECTOR_METRICS_PORT=0 (metrics off) disable this check: --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('STREAM_DETECTOR_METRICS_PORT', '9108'), timeout=4)"]
ENTRYPOINT ["stream-detector", "worker"]
CMD []
