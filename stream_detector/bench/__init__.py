"""Benchmark runners: reproducible measurements, run as ``stream-detector bench NAME``.

Every runner is a :class:`~stream_detector.bench.framework.Benchmark` (``bench/<name>.main(argv)``):
its options, its run, and one writer for ``<out>/<stem>.json`` and ``.md`` with the machine
described (``--out``, default ``./bench-results/``; the committed reports are in
``docs/benchmarks/``, their history in ``docs/benchmarks/history.md``).

``paper``: the MNIST and UCI HAR protocols of Haloui et al., "Anomaly detection with Wasserstein GAN".
``telemanom``: per-channel detection on a telemanom-layout folder (NASA SMAP).
``nab``: the Numenta Anomaly Benchmark, online, scored by ``nab_scorer``.
``throughput`` / ``inference``: the worker's speed and the model's compute (``throughput_workload``,
``throughput_runs``, ``throughput_report``: the throughput runner by concern).
``soak`` / ``overload``: long runs of the real worker under a live fleet.
Helpers: ``worker_process`` (the worker as a child process), ``datasets`` (the shared data
folder), ``via_worker`` (a series through the deployed path), ``machine``, ``profile``.
"""
