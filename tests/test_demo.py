"""``onionmail demo`` end to end: its own private Tor network, two boxes, two messages.

This is the command the README promises; it runs here exactly as a user runs
it (a subprocess of the installed CLI) and must exit 0.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from onionmail.tor.testnet.network import require_tor_tools


@pytest.mark.tor
def test_demo_runs_green_and_reports_what_happened(tmp_path: Path) -> None:
    require_tor_tools()
    result = subprocess.run(
        [sys.executable, "-m", "onionmail.cli", "demo", "--work-dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    out = result.stdout
    onions = re.findall(r"^\s+(alice|bob)\s+\1@([a-z2-7]{56})\.onion$", out, re.M)
    assert {name for name, _ in onions} == {"alice", "bob"}
    assert out.count("check:    intact") == 2
    assert len(re.findall(r"timing:\s+\d+\.\d\d s from the submission's 250", out)) == 2
    stored = re.findall(r"stored:\s+(\S+)", out)
    assert len(stored) == 2 and all(Path(p).is_file() for p in stored)
    assert "RESULT: both messages arrived intact" in out
    # Everything the demo started is gone: no tor is left running from its directory.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path) not in ps
