"""Results over seeds as tables: mean and standard deviation, CSV and Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dmnreid.experiments.stand_ins import check_one_stand_in
from dmnreid.provenance import STAND_IN, short

SCORES = ("rank1", "rank5", "rank10", "mAP")


def summarise(results: pd.DataFrame, by: Sequence[str],
              metrics: Sequence[str] = SCORES) -> pd.DataFrame:
    """One row per group: ``<metric>`` mean, ``<metric>_std`` (sample standard deviation,
    0 for one seed), ``seeds`` (results averaged) and, where results come from several
    stand-ins (``source-seed``), ``stand-ins``; in the order the groups first appear.
    Refuses groups that would mix two stand-ins of one ``source-seed``."""
    check_one_stand_in(results, by)
    grouped = results.groupby(list(by), sort=False)
    table = grouped[list(metrics)].mean()
    spread = grouped[list(metrics)].std(ddof=1).fillna(0.0).add_suffix("_std")
    table = table.join(spread)
    table["seeds"] = grouped.size()
    if "source-seed" in results and results["source-seed"].nunique() > 1:
        table["stand-ins"] = grouped["source-seed"].nunique()
    return table.reset_index()


def made_with(results: pd.DataFrame) -> str:
    """What the results were computed from, for a table's notes: each stand-in (by
    ``source-seed``), the CPU capabilities and torch versions."""
    if STAND_IN not in results:
        return "stand-in not recorded"
    parts = []
    for column, label in (("source-seed", "source-seed"), ("cpu-capability", "CPU"),
                          ("torch", "torch")):
        if column in results:
            values = sorted({str(v) for v in results[column].dropna()})
            parts.append(f"{label} {'/'.join(values)}")
    shas = sorted({short(v) for v in results[STAND_IN].fillna("")})
    return f"stand-in {'/'.join(shas)} ({', '.join(parts)})"


FRACTIONS = ("precision", "recall", "fscore", "nmi")  # in [0, 1]: three digits


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table, its values as they are printed."""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _cell(row: pd.Series, column: str, table: pd.DataFrame, metrics: Sequence[str]) -> str:
    value, digits = row[column], 3 if column in FRACTIONS else 1
    if column in metrics and f"{column}_std" in table.columns:
        return f"{value:.{digits}f} ± {row[f'{column}_std']:.{digits}f}"
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.{digits}f}"
    return str(value)


def markdown(table: pd.DataFrame, metrics: Sequence[str] = SCORES) -> str:
    """A Markdown table; a metric with a ``_std`` column is shown as ``mean ± std``."""
    shown = [c for c in table.columns if not c.endswith("_std")]
    cells = pd.DataFrame([{c: _cell(row, c, table, metrics) for c in shown}
                          for _, row in table.iterrows()], columns=shown)
    return markdown_table(cells)


def write(table: pd.DataFrame, out: Path, name: str, metrics: Sequence[str] = SCORES,
          title: str = "", notes: str = "") -> str:
    """``name.csv`` and ``name.md`` under ``out``; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{name}.csv", index=False)
    text = (f"## {title}\n\n" if title else "") + markdown(table, metrics) + (
        f"\n{notes}\n" if notes else "")
    (out / f"{name}.md").write_text(text)
    return text
