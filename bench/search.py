"""The TUI's search (``/``) over a 10,000-message folder, against ``grep -rlF`` on the same files.

Run on demand (not by pytest)::

    .venv/bin/python -m bench.search [--messages 10000] [--repeats 7] [--json FILE]

With ``--messages 100000`` it also says whether every run stayed under 1 s.

The time measured is the inbox's own search: every message of the folder
read and matched (:func:`onionmail.message.search.matching`: From,
To, Cc, Subject and the text, encoded fields and bodies decoded) for a word
that only the oldest message holds, so no message is skipped. The
reference is ``grep -rlF`` for the same word over the same files (raw bytes
only: it decodes nothing). Runs are interleaved after one warm-up of each,
so both read from the page cache.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import print_table
from bench.common import summary as summarise
from bench.tui_start import fill
from onionmail.box.api import BoxApi
from onionmail.box.create import create_box
from onionmail.message.search import matching

WORD = "Message number 00000"
"""The subject of the oldest message: the search must read every file to be sure."""
TARGET_MESSAGES, TARGET_SECONDS = 100_000, 1.0
"""Issue 21's target, checked when the folder has at least that many messages."""


def search_once(api: BoxApi) -> float:
    root = api.folder_path("alice")
    started = time.perf_counter()
    found = matching(root, api.message_keys("alice"), WORD)
    elapsed = time.perf_counter() - started
    assert len(found) == 1, found
    return elapsed


def grep_once(maildir: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        ["grep", "-rlF", WORD, str(maildir / "cur")], capture_output=True, check=True
    )
    elapsed = time.perf_counter() - started
    assert len(result.stdout.splitlines()) == 1
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("search.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        box = create_box(Path(tmp) / "box", "alice", submission_port=0).box_dir
        maildir = box / "mail" / "alice"
        fill(maildir, args.messages)
        api = BoxApi(box)
        search_once(api)  # warm-up: page cache, bytecode
        grep_once(maildir)
        results: dict[str, list[float]] = {"onionmail search": [], "grep -rlF": []}
        for _ in range(args.repeats):
            results["onionmail search"].append(search_once(api))
            results["grep -rlF"].append(grep_once(maildir))
    summary = {name: summarise(times) for name, times in results.items()}
    print_table(
        f"search of one folder, {args.messages} messages, {args.repeats} runs",
        ["program", "median s", "min s", "max s"],
        [
            [name, *(f"{row[k]:.3f}" for k in ("median", "min", "max"))]
            for name, row in summary.items()
        ],
    )
    ratio = summary["onionmail search"]["median"] / summary["grep -rlF"]["median"]
    print(f"ratio (median): {ratio:.2f}x grep")
    if args.messages >= TARGET_MESSAGES:
        slowest = summary["onionmail search"]["max"]
        verdict = "met" if slowest < TARGET_SECONDS else "missed"
        print(
            f"target: {TARGET_MESSAGES:,} messages in under {TARGET_SECONDS:g} s, every run: "
            f"slowest {slowest:.3f} s, {verdict}"
        )
    args.json.write_text(json.dumps({"messages": args.messages, "results": summary}, indent=1))
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
