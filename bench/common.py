"""Shared pieces of the benchmarks: statistics, tables, JSON results, free ports."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results.json")


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of repeated runs, with the runs themselves."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{2 if abs(value) < 10 else digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in header]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        first = row[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print("  " + "  ".join([first, *rest]))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def add_arguments(parser: argparse.ArgumentParser, repeats: int = 3) -> None:
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--repeats", type=int, default=repeats, help="runs of each measurement")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file (merged)")


def write_results(path: Path, name: str, data: Any) -> None:
    """Store ``data`` under ``name`` in the JSON file ``path``, keeping the other benchmarks."""
    try:
        everything = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        everything = {}
    everything[name] = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **data}
    path.write_text(json.dumps(everything, indent=1, default=str) + "\n")
    print(f"written: {path} [{name}]")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_and_report(
    args: argparse.Namespace,
    name: str,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
) -> int:
    """The end of every benchmark's ``main``: measure, print the tables, merge the JSON."""
    data = run(args)
    report(data)
    write_results(args.json, name, data)
    return 0


@contextmanager
def serve_child(
    module: str, directory: Path, stop_timeout: float = 10.0
) -> Iterator[subprocess.Popen[str]]:
    """Run ``python -m module --serve directory`` (its box) for the block, talking over its
    stdin and stdout; closing stdin asks it to stop, which it must within ``stop_timeout``
    seconds (else it is killed)."""
    child = subprocess.Popen(
        [sys.executable, "-m", module, "--serve", str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield child
    finally:
        if child.stdin is not None and not child.stdin.closed:
            child.stdin.close()
        try:
            child.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def serve_or_report(
    args: argparse.Namespace,
    name: str,
    serve: Callable[[Path], Coroutine[Any, Any, None]],
    run: Callable[[argparse.Namespace], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
) -> int:
    """``main`` of a benchmark whose box runs in a child (``--serve BOXDIR``): be that child,
    or measure and report."""
    if args.serve:
        # aiosmtpd logs a warning at every session about AUTH without TLS (loopback: intended)
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        asyncio.run(serve(args.serve))
        return 0
    return run_and_report(args, name, run, report)


def timed_main(
    argv: list[str] | None,
    name: str,
    doc: str | None,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
) -> int:
    """``main`` of a benchmark timed in a loop: --quick, --repeats, --budget, --json."""
    parser = argparse.ArgumentParser(description=(doc or name).splitlines()[0])
    add_arguments(parser, repeats=5)
    parser.add_argument("--budget", type=float, default=0.0, help="seconds per run (1; quick 0.2)")
    return run_and_report(parser.parse_args(argv), name, run, report)
