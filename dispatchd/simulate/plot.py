"""The PNG: four panels comparing the policies of one simulation.

matplotlib is optional (the ``sim`` extra); without it :func:`plot` says why it made no
picture and the caller prints the tables anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dispatchd.simulate.stats import Summary
from dispatchd.simulate.workload import Workload

MISSING = "matplotlib is not installed (pip install 'dispatchd[sim]')"


def _nan(x: float | None, scale: float = 1.0) -> float:
    return float("nan") if x is None else x * scale


def _by_time(ax: Any, summaries: Sequence[Summary], field: str, label: str) -> None:
    for s in summaries:
        xs = [b.start_h for b in s.buckets]
        scale = 100.0 if field == "service_level" else 1.0
        ax.plot(xs, [_nan(getattr(b, field), scale) for b in s.buckets], marker=".",
                label=f"{s.policy} ({s.engine})")
    ax.set_xlabel("hour (arrival)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)


def _offered(ax: Any, summary: Summary) -> None:
    twin = ax.twinx()
    xs = [b.start_h for b in summary.buckets]
    width = (xs[1] - xs[0]) if len(xs) > 1 else 1.0
    twin.bar(xs, [b.offered for b in summary.buckets], width=width, align="edge",
             color="grey", alpha=0.15)
    twin.set_ylabel("customers arriving")


def _groups(ax: Any, summaries: Sequence[Summary]) -> None:
    names = list(summaries[0].groups)
    width = 0.8 / len(summaries)
    for k, s in enumerate(summaries):
        xs = [i + k * width for i in range(len(names))]
        ax.bar(xs, [_nan(s.groups[g].service_level, 100.0) for g in names], width=width,
               label=s.policy)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=30)
    ax.set_ylabel("service level %")
    ax.set_title("service level by group")
    ax.legend(fontsize="small")


def _occupancy(ax: Any, summaries: Sequence[Summary]) -> None:
    data = [[100 * x for x in s.agent_occupancy] or [float("nan")] for s in summaries]
    ax.boxplot(data)
    ax.set_xticks(range(1, len(summaries) + 1), [s.policy for s in summaries])
    ax.set_ylabel("occupancy % per agent")
    ax.set_title("occupancy of each agent (all pools; fairness within pools: see table)")


def plot(work: Workload, summaries: Sequence[Summary], path: str | Path, title: str) -> str | None:
    """Write the PNG to ``path``; returns None, or why no picture was made.

    Raises:
        OSError: ``path`` cannot be written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return MISSING
    if not summaries:
        return "no policy was run"
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    sl_s = work.scenario.service_level_s
    _by_time(axes[0][0], summaries, "service_level", f"service level % (within {sl_s:g} s)")
    _offered(axes[0][0], summaries[0])
    axes[0][0].set_title("service level by arrival time")
    axes[0][0].legend(fontsize="small", loc="lower left")
    _by_time(axes[0][1], summaries, "asa_s", "ASA s")
    axes[0][1].set_title("average speed of answer by arrival time")
    _groups(axes[1][0], summaries)
    _occupancy(axes[1][1], summaries)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return None
