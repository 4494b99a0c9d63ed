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
