"""Start-up of onionmail-tui on a 10,000-message Maildir, against neomutt on the same Maildir.

Run on demand (not by pytest)::

    .venv/bin/python -m bench.tui_start [--messages 10000] [--repeats 7] [--json FILE]

Both programs run in a pseudo-terminal of 120x40. The time measured is from
the spawn of the process to the moment the newest message's subject appears
in what it wrote to the terminal: the first paint of the index with real
content. The TUI lists the folder, then parses headers in a worker, newest
first; neomutt reads every header before it draws (``sort=reverse-date``,
no header cache). Runs are interleaved (tui, neomutt, tui, ...) after one
warm-up of each, so both see the same page cache. Prints a table and writes
JSON (default ``bench/tui_start.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import signal
import statistics
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

from onionmail.box.create import create_box

BASE_TIME = 1767225600
TIMEOUT = 120.0


def fill(maildir: Path, count: int) -> str:
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for n in range(count):
        msg = EmailMessage()
        msg["From"] = "bob@example.onion"
        msg["To"] = "alice@example.onion"
        msg["Subject"] = f"Message number {n:05d}"
        msg["Date"] = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(BASE_TIME + n * 60))
        msg["Message-ID"] = f"<bench-{n}@example.onion>"
        msg.set_content(f"message {n}\n" * 20)
        (maildir / "cur" / f"{BASE_TIME + n * 60}.M{n}P1.bench:2,S").write_bytes(bytes(msg))
    return f"Message number {count - 1:05d}"


def time_to_marker(argv: list[str], env: dict[str, str], marker: bytes) -> float:
    start = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes the program
        os.environ.update(env)
        os.execvp(argv[0], argv)
    seen = b""
    try:
        while time.perf_counter() - start < TIMEOUT:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(fd, 1 << 16)
                except OSError:
                    break
                if marker in seen:
                    return time.perf_counter() - start
        raise RuntimeError(f"{argv[0]}: no {marker!r} on the terminal in {TIMEOUT} s")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("tui_start.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        box = create_box(Path(tmp) / "box", "alice", submission_port=0).box_dir
        maildir = box / "mail" / "alice"
        marker = fill(maildir, args.messages).encode()
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
        results: dict[str, list[float]] = {name: [] for name in commands}
        for argv in commands.values():  # warm-up: page cache, bytecode
            time_to_marker(argv, env, marker)
        for _ in range(args.repeats):
            for name, argv in commands.items():
                results[name].append(time_to_marker(argv, env, marker))
    print(f"time to the first paint of the index, {args.messages} messages, {args.repeats} runs")
    print(f"{'program':15} {'median s':>9} {'min s':>7} {'max s':>7}")
    summary = {}
    for name, times in results.items():
        row = {"median": statistics.median(times), "min": min(times), "max": max(times)}
        summary[name] = {**row, "runs": times}
        print(f"{name:15} {row['median']:9.3f} {row['min']:7.3f} {row['max']:7.3f}")
    args.json.write_text(json.dumps({"messages": args.messages, "results": summary}, indent=1))
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
