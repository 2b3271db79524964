"""Benchmark runners: reproducible measurements that write JSON and a Markdown table under
``docs/benchmarks/``, run as ``stream-detector bench NAME`` (each module has ``main(argv)``).

``paper``: the MNIST and UCI HAR protocols of Haloui et al., "Anomaly detection with Wasserstein GAN".
``telemanom``: per-channel detection on a telemanom-layout folder (NASA SMAP).
``nab``: the Numenta Anomaly Benchmark, online, scored by ``nab_scorer``.
``throughput`` / ``inference``: the worker's speed and the model's compute.
"""
