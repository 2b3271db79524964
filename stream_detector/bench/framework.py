"""The shape every benchmark runner shares: its arguments, its run, and one report writer.

A runner is a :class:`Benchmark`: ``add_arguments`` declares its own options (``--out`` is
declared here, for all of them), ``run(args)`` measures and returns one or more
:class:`Report` (a file stem, the JSON-able result, its Markdown), and :func:`write_report`
writes ``<out>/<stem>.json`` and ``<stem>.md``, adding the machine description under
``host``.  Plots stay in the runners (they know what to draw) and are written by ``run``
into ``args.out``.  ``bench/<name>.main(argv)`` is ``Benchmark.main``, which is what
``stream-detector bench <name>`` calls.

Reports go to ``./bench-results/`` by default: a run must not rewrite the committed reports
in ``docs/benchmarks/`` unless asked to (``--out docs/benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .machine import describe

DEFAULT_OUT = Path("bench-results")


@dataclass
class Report:
    """One ``<stem>.json`` / ``<stem>.md`` pair; ``markdown`` is the text or a function of the
    result (called after ``host`` is added, so the Markdown may name the machine)."""

    stem: str
    result: dict
    markdown: str | Callable[[dict], str]
    message: str | None = ""  # printed after writing ("; written to ..." appended); None: print nothing


def write_report(out: str | Path, report: Report) -> Path:
    """Write ``<out>/<stem>.json`` and ``<out>/<stem>.md`` and return ``<out>/<stem>``.

    The JSON gets ``host`` (:func:`~stream_detector.bench.machine.describe`) unless the runner
    set one; the Markdown gets a closing ``Machine:`` line when it does not already name the
    CPU, so that no report can be read without knowing where its figures were measured."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = report.result
    host = result.setdefault("host", describe())
    md = report.markdown(result) if callable(report.markdown) else report.markdown
    if host["cpu_model"] not in md:
        md = md.rstrip("\n") + f"\n\nMachine: {host['cpu_model']}, {host['cores']} cores ({host['platform']}).\n"
    (out / f"{report.stem}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (out / f"{report.stem}.md").write_text(md)
    return out / report.stem


class Benchmark:
    """A benchmark runner: its name and description, :meth:`add_arguments` and :meth:`run`;
    :meth:`main` is the command line.  Most runners are built from their two functions,
    ``Benchmark("nab", doc, add_arguments, run)``; a runner that needs more subclasses."""

    name: str = ""
    description: str = ""
    out_help: ClassVar[str] = "folder for the JSON, Markdown and plots"
    out_flags: ClassVar[tuple[str, ...]] = ("--out",)  # a runner may keep an older spelling beside it

    def __init__(self, name: str | None = None, description: str | None = None,
                 add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                 run: Callable[[argparse.Namespace], Report | list[Report] | int] | None = None) -> None:
        if name is not None:
            self.name = name
        if description is not None:
            self.description = description
        if add_arguments is not None:
            self.add_arguments = add_arguments  # type: ignore[method-assign]
        if run is not None:
            self.run = run  # type: ignore[method-assign]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The runner's own options (everything but ``--out``)."""

    def run(self, args: argparse.Namespace) -> Report | list[Report] | int:
        """Measure; return the report(s) to write, or an exit status for a refused argument
        (after printing ``error: ...``)."""
        raise NotImplementedError

    def build_parser(self) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(prog=f"stream-detector bench {self.name}", description=self.description)
        self.add_arguments(p)
        p.add_argument(*self.out_flags, dest="out", default=str(DEFAULT_OUT), help=f"{self.out_help} (default ./{DEFAULT_OUT}/; "
                       "--out docs/benchmarks rewrites the committed reports)")
        return p

    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        return self.build_parser().parse_args(None if argv is None else list(argv))

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parse ``argv`` (``None``: ``sys.argv``), run, write every report; 0 when written."""
        args = self.parse(argv)
        return self.finish(args, self.run(args))

    def finish(self, args: argparse.Namespace, reports: Report | list[Report] | int) -> int:
        if isinstance(reports, int):
            return reports
        for report in [reports] if isinstance(reports, Report) else reports:
            written = write_report(args.out, report)
            if report.message is not None:
                print(f"{report.message}; written to {written}.json/.md" if report.message
                      else f"wrote {written}.json and {written}.md", flush=True)
        return 0


def error(message: str) -> int:
    """An argument the runner refuses after parsing: one ``error:`` line and status 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


__all__ = ["DEFAULT_OUT", "Benchmark", "Report", "error", "write_report"]
