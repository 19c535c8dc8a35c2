"""Run a box's private Dovecot alone (no tor), for tests: ``python -m tests.dovecot_child``.

Arguments: BOXDIR and the local IMAP port. Prints ``ready <dovecot pid>`` once IMAP
answers, applies the device list again on each line read from stdin (as SIGHUP does in
a running box), and stops Dovecot at end of input.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from onionmail.devices.dovecot import Dovecot
from onionmail.devices.registry import DeviceRegistry


async def main(box_dir: Path, port: int) -> None:
    registry = DeviceRegistry(box_dir)
    dovecot = Dovecot(box_dir, local_imap_port=port)
    await dovecot.start(registry.devices())
    assert dovecot.process is not None
    print(f"ready {dovecot.process.pid}", flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        await dovecot.reload(registry.devices())
        await asyncio.sleep(0.5)  # Dovecot rereads its configuration on SIGHUP
        print("reloaded", flush=True)
    await dovecot.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
