"""Start-up of onionmail-tui on a large Maildir, against neomutt on the same Maildir.

Run on demand (not by pytest)::

    .venv/bin/python -m bench.tui_start [--messages 10000 ...] [--curve] [--repeats 7]

Both programs run in a pseudo-terminal of 120x40. The time measured is from
the spawn of the process to the moment the newest message's subject appears
in what it wrote to the terminal: the first paint of the index with real
content. At that moment Enter is typed, and the time to the newest
message's body on the terminal is measured too: when a key typed at first
sight is answered (the message opened). The TUI reads the folder's listing and its newest
screenful and draws it before it loads its UI (tui/start.py), then reads
the rest in a worker; neomutt reads every header before it draws
(``sort=reverse-date``, no header cache). Runs are interleaved (tui,
neomutt, tui, ...) after one warm-up of each, so both see the same page
cache. The project's modules are compiled to bytecode first, as an
installed package's are (this machine's environment may forbid writing it).
``--curve`` runs 1,000 / 10,000 / 100,000 / 1,000,000 messages and judges
issue 21's targets: at most 1.0x neomutt at 10,000, 0.5x at 100,000. Prints
a table and writes JSON (default ``bench/tui_start.json``).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import pty
import select
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from onionmail.box.create import create_box

BASE_TIME = 1767225600
TIMEOUT = 120.0


def fill(maildir: Path, count: int) -> str:
    """``count`` plain messages, one a minute, seen; the newest one's subject."""
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for n in range(count):
        when = BASE_TIME + n * 60
        date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(when))
        body = f"message {n}\n" * 20
        (maildir / "cur" / f"{when}.M{n}P1.bench:2,S").write_bytes(
            (
                "From: bob@example.onion\nTo: alice@example.onion\n"
                f"Subject: {subject(n)}\nDate: {date}\nMessage-ID: <bench-{n}@example.onion>\n"
                'Content-Type: text/plain; charset="utf-8"\n'
                "Content-Transfer-Encoding: 7bit\nMIME-Version: 1.0\n\n" + body
            ).encode()
        )
    return subject(count - 1)


def subject(n: int) -> str:
    return f"Message number {n:05d}"


def time_to_marker(
    argv: list[str], env: dict[str, str], marker: bytes, opened: bytes
) -> tuple[float, float]:
    """Seconds from the spawn to ``marker`` on the terminal (the first paint), and to
    ``opened`` (the newest message's body), Enter having been typed at the first paint."""
    start = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes the program
        os.environ.update(env)
        os.execvp(argv[0], argv)
    seen = b""
    painted = 0.0
    try:
        while time.perf_counter() - start < TIMEOUT:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(fd, 1 << 16)
                except OSError:
                    break
                if not painted and marker in seen:
                    painted = time.perf_counter() - start
                    seen = b""
                    os.write(fd, b"\r")  # Enter: open the message under the cursor
                if painted and opened in seen:
                    return painted, time.perf_counter() - start
        raise RuntimeError(f"{argv[0]}: no {marker!r} or {opened!r} on the terminal in {TIMEOUT} s")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


CURVE = (1_000, 10_000, 100_000, 1_000_000)
TARGETS = {10_000: 1.0, 100_000: 0.5}
"""Issue 21: the TUI's first paint at most this many times neomutt's."""


def measure(messages: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Both programs on one fresh Maildir of ``messages``: median, min, max and runs."""
    with tempfile.TemporaryDirectory() as tmp:
        box = create_box(Path(tmp) / "box", "alice", submission_port=0).box_dir
        maildir = box / "mail" / "alice"
        print(f"  filling {messages:,} messages…", flush=True)
        marker = fill(maildir, messages).encode()
        env = {"TERM": "xterm-256color", "LINES": "40", "COLUMNS": "120", "HOME": tmp}
        rc = Path(tmp) / "neomuttrc"
        rc.write_text(
            f"set folder={tmp}\nset sort=reverse-date\nset header_cache=''\n"
            "set message_cachedir=''\nset mail_check_stats=no\n"
        )
        commands = {
            "onionmail-tui": [sys.executable, "-m", "tui", "--dir", str(box)],
            "neomutt": ["neomutt", "-n", "-F", str(rc), "-R", "-f", str(maildir)],
        }
        opened = f"message {messages - 1}\n".encode().strip()  # the newest one's body
        painted: dict[str, list[float]] = {name: [] for name in commands}
        answered: dict[str, list[float]] = {name: [] for name in commands}
        for argv in commands.values():  # warm-up: the page cache
            time_to_marker(argv, env, marker, opened)
        for _ in range(repeats):
            for name, argv in commands.items():
                first, key = time_to_marker(argv, env, marker, opened)
                painted[name].append(first)
                answered[name].append(key)
    return {
        name: {**spread(painted[name]), "answered": spread(answered[name])} for name in commands
    }


def spread(runs: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(runs), "min": min(runs), "max": max(runs), "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, nargs="+", default=[10_000])
    parser.add_argument("--curve", action="store_true", help="1,000 to 1,000,000 messages")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("tui_start.json"))
    args = parser.parse_args()
    sizes = list(CURVE) if args.curve else args.messages
    root = Path(__file__).resolve().parent.parent
    for package in ("onionmail", "tui", "threat_model"):
        compileall.compile_dir(root / package, quiet=1)
    curve: dict[str, dict[str, dict[str, Any]]] = {}
    for messages in sizes:
        curve[str(messages)] = measure(messages, args.repeats)
    print(f"time to the first paint of the index, {args.repeats} runs each")
    table(curve, lambda cell: cell)
    print("time to the newest message open, Enter typed at the first paint")
    table(curve, lambda cell: cell["answered"])
    for messages, most in TARGETS.items():
        if str(messages) in curve:
            cells = curve[str(messages)]
            ratio = cells["onionmail-tui"]["median"] / cells["neomutt"]["median"]
            verdict = "met" if ratio <= most else "missed"
            print(f"target: first paint at {messages:,} <= {most}x neomutt: {ratio:.2f}, {verdict}")
    headline = "10000" if "10000" in curve else next(iter(curve))
    summary = {"messages": int(headline), "results": curve[headline], "curve": curve}
    args.json.write_text(json.dumps(summary, indent=1))
    print(f"written: {args.json}")
    return 0


def table(curve: dict[str, dict[str, dict[str, Any]]], pick: Any) -> None:
    print(f"{'messages':>10} {'program':15} {'median s':>9} {'min s':>7} {'max s':>7} {'ratio':>6}")
    for messages, cells in curve.items():
        reference = pick(cells["neomutt"])["median"]
        for name, cell in cells.items():
            row = pick(cell)
            print(
                f"{int(messages):>10,} {name:15} {row['median']:9.3f} {row['min']:7.3f} "
                f"{row['max']:7.3f} {row['median'] / reference:6.2f}"
            )


if __name__ == "__main__":
    sys.exit(main())
