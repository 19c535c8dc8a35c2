"""``python -m tui.screenshots OUTDIR``: SVG screenshots of the TUI for the README.

Rendered by the app itself (textual's SVG export) from the deterministic
sample box of :mod:`tui.sample_box` (with its three-message thread), at
120x40: the inbox, the compose
screen with the leak card of an onion contact, and the what-if view; and at 100x62 the
sheet of a device added from the status screen (the sample box's, made for the picture).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

from textual.widgets import DataTable, Input

from onionmail.box.api import BoxApi
from tui.app import OnionMailApp
from tui.sample_box import add_sample_thread, create_sample_box

SIZE = (120, 40)
DEVICE_SIZE = (100, 62)
"""The device sheet: its QR code and the settings under it, whole."""


async def render(outdir: Path) -> list[Path]:
    written: list[Path] = []
    outdir = outdir.absolute()
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        # in the box's parent directory: hints name it as typed ("--dir alice")
        box = create_sample_box(Path(tmp) / "alice")
        add_sample_thread(box)
        app = OnionMailApp(BoxApi(box))
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one("#messages", DataTable)
            while table.row_count < 8:
                await pilot.pause(0.05)
            await pilot.pause(0.2)

            def shot(name: str, title: str) -> None:
                path = outdir / f"{name}.svg"
                path.write_text(app.export_screenshot(title=title))
                written.append(path)

            shot("inbox", "onionmail-tui: inbox")
            await pilot.press("c")
            app.screen.query_one("#to", Input).value = "bob"
            app.screen.query_one("#subject", Input).value = "Lunch on Friday?"
            await pilot.pause(0.2)
            await app.workers.wait_for_complete()
            await pilot.press("escape")
            await pilot.pause(0.2)
            shot("leak-card", "onionmail-tui: compose, with the leak card")
            await pilot.press("ctrl+w")
            await app.workers.wait_for_complete()
            await pilot.pause(0.2)
            await pilot.press("down", "down", "down", "down", "down", "right")
            await pilot.pause(0.3)
            shot("what-if", "onionmail-tui: what-if")
        app = OnionMailApp(BoxApi(box))
        async with app.run_test(size=DEVICE_SIZE) as pilot:
            await pilot.press("s")
            await app.workers.wait_for_complete()
            await pilot.press("a")
            await pilot.pause(0.1)
            app.screen.query_one(Input).value = "phone"
            await pilot.press("enter")
            await pilot.pause(0.3)
            await app.workers.wait_for_complete()
            await pilot.pause(0.2)
            path = outdir / "device.svg"
            path.write_text(app.export_screenshot(title="onionmail-tui: a new device"))
            written.append(path)
    return written


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m tui.screenshots OUTDIR", file=sys.stderr)
        return 2
    outdir = Path(sys.argv[1])
    outdir.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(render(outdir)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
