"""Run every benchmark: ``.venv/bin/python -m bench [--quick] [--only NAME ...] [--json FILE]``.

Each benchmark runs in its own process (``python -m bench.<name>``), prints
its table (median, min, max over repeated runs; ratios against references
measured in the same run) and merges its figures into one JSON file
(``bench/results.json`` by default). A benchmark that fails is reported and
the others still run; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, print_table, write_results

BENCHMARKS = ("crypto", "openpgp", "memory", "accept", "onion", "tui_start", "search", "growth")
OWN_JSON = ("tui_start", "search")
"""Benchmarks that write a JSON file of their own, merged into the results file."""


def command(name: str, quick: bool, json_path: Path) -> list[str]:
    argv = [sys.executable, "-m", f"bench.{name}", "--json", str(json_path)]
    if name == "tui_start":
        return argv + (["--repeats", "3"] if quick else ["--curve", "--repeats", "5"])
    if name == "search":  # issue 21's target is at 100,000 messages
        return argv + (["--repeats", "3"] if quick else ["--messages", "100000", "--repeats", "5"])
    return argv + (["--quick"] if quick else [])


def headline(path: Path) -> None:
    """The ratios of this run against its references (Postfix for accept), one table."""
    try:
        results: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    rows: list[list[Any]] = []
    accept = results.get("accept", {})
    references = accept.get("references", {})  # box submission: Postfix submission (AUTH)
    for key, targets in accept.get("results", {}).items():
        for name, gen in (("box submission", "asyncio"), ("box inbound", "smtp-source")):
            reference = references.get(name, "postfix")
            box = targets.get(f"{name} [{gen}]", {}).get("median")
            ref = targets.get(f"{reference} [{gen}]", {}).get("median")
            sink = targets.get(f"smtp-sink [{gen}]", {}).get("median")
            if box and ref and sink:
                label = f"accept {key}: {name} ({gen}; ref: {reference})"
                rows.append([label, box, box / ref, box / sink])
    onion = results.get("onion", {})
    for kind in ("cold", "warm"):
        lat = onion.get("latency_s", {})
        if f"box {kind}" in lat:
            box_ms, raw_ms = lat[f"box {kind}"]["p50"] * 1000, lat[f"raw {kind}"]["p50"] * 1000
            rows.append(
                [f"onion latency p50 {kind}, ms (ref: raw stream)", box_ms, box_ms / raw_ms, None]
            )
    tp = onion.get("throughput_per_s", {})
    if tp:
        rows.append(
            [
                "onion throughput, msg/s (ref: raw stream)",
                tp["box"],
                tp["box"] / tp["raw stream"],
                None,
            ]
        )
    mem = results.get("memory", {})
    if mem:
        rows.append(
            ["memory: bytes per queued message", mem["bytes_per_message_second_half"], None, None]
        )
    tui = results.get("tui_start", {}).get("results", {})
    if tui:
        t, n = tui["onionmail-tui"]["median"], tui["neomutt"]["median"]
        rows.append(["tui first paint, s (ref: neomutt)", t, t / n, None])
        if "answered" in tui["onionmail-tui"]:
            t, n = (tui[name]["answered"]["median"] for name in ("onionmail-tui", "neomutt"))
            rows.append(["tui key typed at first paint answered, s", t, t / n, None])
    search = results.get("search", {})
    if search.get("results"):
        t, g = (search["results"][name]["median"] for name in ("onionmail search", "grep -rlF"))
        label = f"search, {search['messages']:,} messages, s (ref: grep -rlF)"
        rows.append([label, t, t / g, None])
    growth = results.get("growth", {}).get("runs", [])
    for run in growth[1:]:  # the first is the empty box, the reference
        judged = [v for c, v in run["ratios"].items() if c.startswith(run["judged_on"]) and v]
        if judged:
            label = f"growth: {run['label']}, lowest {run['judged_on']} rate (ref: empty box)"
            rows.append([label, None, min(judged), None])
    if rows:
        print_table("headline (this run)", ["measure", "value", "/reference", "/smtp-sink"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs of every benchmark")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file (merged)")
    args = parser.parse_args(argv)
    failed: list[str] = []
    timings: dict[str, float] = {}
    for name in args.only or BENCHMARKS:
        print(f"\n=== bench.{name}{' (quick)' if args.quick else ''} ===", flush=True)
        start = time.monotonic()
        if name in OWN_JSON:  # it writes its own JSON file: merge it
            with tempfile.TemporaryDirectory() as tmp:
                own = Path(tmp) / f"{name}.json"
                code = subprocess.call(command(name, args.quick, own))
                if code == 0:
                    write_results(args.json, name, json.loads(own.read_text()))
        else:
            code = subprocess.call(command(name, args.quick, args.json))
        timings[name] = time.monotonic() - start
        if code != 0:
            print(f"bench.{name}: FAILED (exit {code})", flush=True)
            failed.append(name)
    headline(args.json)
    print("\n=== summary ===")
    for name, seconds in timings.items():
        print(f"  {name:10} {'FAILED' if name in failed else 'ok':6} {seconds:7.1f} s")
    write_results(args.json, "run", {"quick": args.quick, "seconds": timings, "failed": failed})
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
