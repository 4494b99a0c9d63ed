"""One stand-in per mean: results made from another stand-in are refused, never averaged in.

Each experiment row records the sha256 of the stand-in it started from (``provenance``). A
finished row is reused only when it was made from this machine's stand-in for the same
settings, and a table averages only rows of one stand-in per ``source-seed`` (the ablation's
``--stand-in-seeds`` averages over several on purpose).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dmnreid.config import ConfigError, RunConfig
from dmnreid.provenance import STAND_IN, UNRECORDED, short
from dmnreid.reid.pretrain import stand_in_record, weights_path


def current_stand_in(cfg: RunConfig) -> str | None:
    """The sha256 of this machine's stand-in for ``cfg``; None where ``cfg`` uses other
    weights or the stand-in has not been pretrained here yet (nothing to compare with)."""
    if cfg.pretrained_weights != "synthetic-source":
        return None
    return stand_in_record(weights_path(cfg)).get("sha256")


def check_reused(done: dict, folder: Path, cfg: RunConfig) -> None:
    """Refuse a finished result in ``folder`` that another stand-in made."""
    current = current_stand_in(cfg)
    made = done.get(STAND_IN) or UNRECORDED
    if current is None or made == current:
        return
    made_with = "before results recorded their stand-in" if made == UNRECORDED \
        else f"with stand-in {short(made)}"
    raise ConfigError(
        f"{folder} was made {made_with}, but this machine's stand-in for these settings is "
        f"{short(current)}: rows of two stand-ins cannot share a mean. Move that folder away "
        "(or give another --out) to make the row again with this stand-in")


def _stand_ins(frame: pd.DataFrame) -> pd.Series:
    if STAND_IN not in frame:
        return pd.Series(UNRECORDED, index=frame.index)
    return frame[STAND_IN].fillna(UNRECORDED).replace("", UNRECORDED)


def check_one_stand_in(frame: pd.DataFrame, by: Sequence[str]) -> None:
    """Refuse a table whose mean for one group would mix two stand-ins of one
    ``source-seed``, naming both and a row made with each."""
    if STAND_IN not in frame:
        return  # no row records one: nothing to tell apart
    keys = [*by, "source-seed"] if "source-seed" in frame else list(by)
    marked = frame.assign(**{STAND_IN: _stand_ins(frame)})
    if "source-seed" in marked:
        marked["source-seed"] = marked["source-seed"].fillna(-1)
    for group, rows in marked.groupby(keys, sort=False, observed=True, dropna=False):
        found = list(dict.fromkeys(rows[STAND_IN]))
        if len(found) > 1:
            examples = [_describe(rows[rows[STAND_IN] == sha].iloc[0]) for sha in found[:2]]
            raise ConfigError(
                f"rows made with different stand-ins cannot share one mean "
                f"({', '.join(f'{k} {v}' for k, v in zip(keys, _tuple(group), strict=True))}): "
                f"{short(found[0])} ({examples[0]}) and {short(found[1])} ({examples[1]}). "
                "Make them again with one stand-in (another --out)")


def _tuple(group: object) -> tuple:
    return group if isinstance(group, tuple) else (group,)


def _describe(row: pd.Series) -> str:
    return ", ".join(f"{k} {row[k]}" for k in ("bn-mode", "row", "seed", "alpha", "strategy")
                     if k in row and not pd.isna(row[k]))
