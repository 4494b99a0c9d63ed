"""The experiments' figures, written as PNG (matplotlib's Figure: no GUI backend, and a
notebook's own backend stays as it is)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def grouped_bars(table: pd.DataFrame, category: str, group: str, metric: str, path: Path,
                 title: str) -> None:
    """Bars of ``metric`` per ``category``, one colour per ``group``, with the
    ``<metric>_std`` column as error bars."""
    categories = list(dict.fromkeys(table[category]))
    groups = list(dict.fromkeys(table[group]))
    width = 0.8 / len(groups)
    fig = Figure(figsize=(max(5.0, 1.1 * len(categories)), 3.5))
    ax = fig.subplots()
    for i, name in enumerate(groups):
        part = table[table[group] == name].set_index(category).reindex(categories)
        x = np.arange(len(categories)) + (i - (len(groups) - 1) / 2) * width
        ax.bar(x, part[metric], width, yerr=part.get(f"{metric}_std"), capsize=3,
               label=f"{group} = {name}")
    ax.set_xticks(np.arange(len(categories)), categories)
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def trade_off(table: pd.DataFrame, x: str, y: str, point: str, series: str, path: Path,
              title: str) -> None:
    """One point per ``point`` value at (``x``, ``y``) with the ``_std`` columns as error
    bars, a panel per ``series`` value: what each choice costs and gives."""
    panels = list(dict.fromkeys(table[series]))
    fig = Figure(figsize=(4.2 * len(panels), 3.5))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, name in zip(axes, panels, strict=True):
        part = table[table[series] == name]
        for _, row in part.iterrows():
            ax.errorbar(row[x], row[y], xerr=row.get(f"{x}_std"), yerr=row.get(f"{y}_std"),
                        fmt="o", capsize=3, label=row[point])
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{series} {name}", fontsize="medium")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
