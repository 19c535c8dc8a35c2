"""A connection flood against a running box: clean refusals, the others served, memory bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onionmail.config.box import load_config
from tests.box_process import RunningBox, start_box
from tests.smtp_client import RawSMTP, code

pytestmark = pytest.mark.tor

WAVES = 20
EXTRA_PER_WAVE = 40


@pytest.fixture(scope="module")
def box(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBox]:
    running = start_box(tmp_path_factory.mktemp("flood"), "flood", testnet.directory)
    try:
        yield running
    finally:
        running.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def refused(port: int) -> str:
    """Connect beyond the limit: the greeting must be a 421 and the server must hang up."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    try:
        greeting = (await asyncio.wait_for(reader.readline(), 10)).decode()
        rest = await asyncio.wait_for(reader.read(), 10)  # EOF: closed by the server
        assert rest == b"", rest
        return greeting.rstrip("\r\n")
    finally:
        writer.close()
        await writer.wait_closed()


def test_connection_flood_is_refused_cleanly_and_memory_stays_bounded(
    box: RunningBox, capsys: pytest.CaptureFixture[str]
) -> None:
    limit = load_config(box.new.box_dir).submission.max_connections
    port = box.submission_port

    async def flood() -> tuple[int, int, list[str]]:
        held = []
        for _ in range(limit):
            client, banner = await RawSMTP.connect(port)
            assert banner.startswith("220"), banner
            held.append(client)
        before = rss_kib(box.process.pid)
        answers: list[str] = []
        for _ in range(WAVES):
            answers += await asyncio.gather(*(refused(port) for _ in range(EXTRA_PER_WAVE)))
            for client in held:  # the sessions within the limit are still served
                assert code(await client.cmd("NOOP")) == 250
        after = rss_kib(box.process.pid)
        for client in held:
            await client.close()
        return before, after, answers

    before, after, answers = asyncio.run(flood())
    assert len(answers) == WAVES * EXTRA_PER_WAVE
    assert set(answers) == {"421 4.7.0 Too many connections, try again later"}, set(answers)
    with capsys.disabled():  # the figures belong in the CI log
        print(
            f"\nflood: {len(answers)} connections beyond the limit of {limit} refused with 421; "
            f"box RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after"
        )
    assert after - before < 16 * 1024, (before, after)  # KiB: bounded, no per-refusal growth

    async def fresh() -> str:
        client, banner = await RawSMTP.connect(port)
        await client.close()
        return banner

    assert asyncio.run(fresh()).startswith("220")
