"""Plots of ``bench/results.json`` for the documentation's performance page.

``python -m bench.plots DIR`` writes one PNG per benchmark into DIR; the
docs build (``docs/hooks.py``) calls :func:`write_plots` before each build.
Medians are bars, the min-max range of the runs is the error bar.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

RESULTS = Path(__file__).with_name("results.json")


def _bars(ax: Axes, groups: list[str], series: dict[str, list[dict[str, float] | None]]) -> None:
    """Grouped bars: one group per x label, one bar per series, whiskers min-max."""
    width = 0.8 / max(1, len(series))
    for n, (label, cells) in enumerate(series.items()):
        xs, medians, low, high = [], [], [], []
        for g, cell in enumerate(cells):
            if cell is None:
                continue
            xs.append(g + (n - (len(series) - 1) / 2) * width)
            medians.append(cell["median"])
            low.append(cell["median"] - cell["min"])
            high.append(cell["max"] - cell["median"])
        ax.bar(xs, medians, width, yerr=[low, high], capsize=3, label=label)
    ax.set_xticks(range(len(groups)), groups)
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)


def plot_accept(data: dict[str, Any], ax: Axes) -> None:
    cells = data["results"]
    groups = list(cells)
    names = ["box inbound [asyncio]", "postfix [asyncio]", "box submission [asyncio]"]
    names.append("postfix submission [asyncio]")
    _bars(ax, groups, {name: [cells[g].get(name) for g in groups] for name in names})
    ax.set_ylabel("messages per second (durable)")
    ax.set_title(f"SMTP accept rate, {data['messages']} messages per run")


def plot_crypto(data: dict[str, Any], ax: Axes) -> None:
    rates = data["ops_per_s"]
    sizes = sorted(rates, key=int)
    groups = [_size(int(size)) for size in sizes]
    names = [n for n in ("seal", "open", "seal v2", "open v2", "ref crypto_box encrypt")
             if n in rates[sizes[0]]]  # fmt: skip
    _bars(ax, groups, {name: [rates[s].get(name) for s in sizes] for name in names})
    ax.set_yscale("log")
    ax.set_ylabel("operations per second (log)")
    ax.set_title("Sealing and opening envelopes, by message size")


def plot_memory(data: dict[str, Any], ax: Axes) -> None:
    points = data["points_kib"]
    labels = list(points)
    ax.barh(labels, [points[p]["VmHWM"] / 1024 for p in labels])
    ax.invert_yaxis()
    ax.set_xlabel("peak RSS (MiB)")
    ax.set_title(f"Box memory with {data['queued']:,} messages queued")
    ax.grid(axis="x", alpha=0.3)


def plot_tui_start(data: dict[str, Any], ax: Axes) -> None:
    curve = data.get("curve")
    if not curve or len(curve) < 2:
        cells = data["results"]
        _bars(ax, [f"{data['messages']:,} messages"], {name: [cells[name]] for name in cells})
    else:  # medians on a log-log curve, the min-max spread as error bars
        sizes = sorted(curve, key=int)
        for number, name in enumerate(curve[sizes[0]]):
            cells = [curve[n][name] for n in sizes]
            curves = [(cells, name, "-")]
            if all("answered" in cell for cell in cells):  # a key typed at the first paint
                curves.append(([c["answered"] for c in cells], f"{name}: a key answered", "--"))
            for rows, label, line in curves:
                medians = [r["median"] for r in rows]
                spread = [
                    [m - r["min"] for m, r in zip(medians, rows, strict=True)],
                    [r["max"] - m for m, r in zip(medians, rows, strict=True)],
                ]
                xs = [int(n) for n in sizes]
                ax.errorbar(
                    xs,
                    medians,
                    yerr=spread,
                    marker="o",
                    linestyle=line,
                    label=label,
                    color=f"C{number}",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("messages in the folder (log)")
        ax.legend()
        ax.grid(alpha=0.3)
    ax.set_ylabel("seconds from the start")
    ax.set_title("Start-up time with a large Maildir")


def plot_growth(data: dict[str, Any], ax: Axes) -> None:
    """Accept rates (medians, min-max whiskers) as the box's Maildir and queue fill, and
    the box process's RSS after the accepts on a second axis."""
    runs = data["runs"]
    labels = [run["label"].replace(",000,000", "M").replace(",000", "k") for run in runs]
    xs = list(range(len(runs)))
    for number, cell in enumerate(runs[0]["rates"]):
        rows = [run["rates"][cell] for run in runs]
        medians = [r["median"] for r in rows]
        spread = [
            [m - r["min"] for m, r in zip(medians, rows, strict=True)],
            [r["max"] - m for m, r in zip(medians, rows, strict=True)],
        ]
        ax.errorbar(xs, medians, yerr=spread, marker="o", label=cell, color=f"C{number}")
    ax.set_xticks(xs, labels)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("messages per second (durable)")
    ax.set_xlabel("what the box holds")
    rss = ax.twinx()
    mib = [run["rss_kib"]["after accepts"]["VmRSS"] / 1024 for run in runs]
    rss.plot(xs, mib, linestyle="--", marker="s", color="grey", label="RSS after the accepts")
    rss.set_ylim(bottom=0)
    rss.set_ylabel("box RSS (MiB)")
    lines, names = ax.get_legend_handles_labels()
    more, more_names = rss.get_legend_handles_labels()
    ax.legend(lines + more, names + more_names, fontsize="small", loc="lower left")
    ax.grid(alpha=0.3)
    ax.set_title(f"Accept rate and memory as work grows, {data['messages']:,} messages per run")


PLOTS: dict[str, Callable[[dict[str, Any], Axes], None]] = {
    "accept": plot_accept,
    "crypto": plot_crypto,
    "memory": plot_memory,
    "tui_start": plot_tui_start,
    "growth": plot_growth,
}
"""Benchmark name in ``results.json`` -> its plot, written as ``bench-<name>.png``."""


def _size(n: int) -> str:
    return f"{n // 1024 // 1024} MiB" if n >= 1024 * 1024 else f"{n // 1024} KiB"


def write_plots(directory: Path, results: Path = RESULTS) -> list[Path]:
    """One PNG per benchmark present in ``results``; returns the files written."""
    data = json.loads(results.read_text())
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in PLOTS.items():
        if name not in data:
            continue
        figure, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
        plot(data[name], ax)
        ax.annotate(
            f"measured {data[name]['measured_at']}",
            (1, 0),
            xycoords="figure fraction",
            ha="right",
            va="bottom",
            fontsize="x-small",
            color="grey",
        )
        path = directory / f"bench-{name.replace('_', '-')}.png"
        figure.savefig(path, dpi=110, metadata={"Software": None})
        plt.close(figure)
        written.append(path)
    return written


if __name__ == "__main__":
    for written in write_plots(Path(sys.argv[1] if len(sys.argv) > 1 else "plots")):
        print(written)
