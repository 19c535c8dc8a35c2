import os
import subprocess
import sys
from pathlib import Path

import pytest

from onionmail.core.errors import OnionMailError
from onionmail.store.lock import BoxLock, running_pid

HOLD = """
import sys, time
from pathlib import Path
from onionmail.store.lock import BoxLock
BoxLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_names_the_running_pid_and_refuses_a_second_box(tmp_path: Path) -> None:
    assert running_pid(tmp_path) is None
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        assert running_pid(tmp_path) == holder.pid
        with pytest.raises(OnionMailError, match=f"pid {holder.pid}"):
            BoxLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    # SIGKILL released the lock although the pid file is still there
    assert (tmp_path / "run" / "box.lock").read_text().strip() == str(holder.pid)
    assert running_pid(tmp_path) is None
    lock = BoxLock(tmp_path)
    lock.acquire()
    assert running_pid(tmp_path) == os.getpid()
    lock.release()
    assert running_pid(tmp_path) is None
