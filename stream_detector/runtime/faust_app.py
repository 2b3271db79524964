"""Entry point for ``faust -A stream_detector.runtime.faust_app worker``.

Configuration comes from the file named by ``STREAM_DETECTOR_CONFIG`` and from
``STREAM_DETECTOR_*`` environment variables, as for ``stream-detector worker``.
"""

from .app import create_app
from .config import load_config

app = create_app(load_config())
