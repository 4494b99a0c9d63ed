"""The paper's Table 1 (rank-1, rank-5, mAP per dataset), to print beside our rows."""

from __future__ import annotations

import pandas as pd

# dataset -> row -> (rank-1, rank-5, mAP), paper section 4, Table 1
TABLE1 = {
    "market1501": {"baseline": (8.4, 17.5, 2.3), "rw": (60.0, 73.0, 35.6),
                   "rw+t": (76.8, 88.7, 51.8), "rw+t+i": (79.4, 90.6, 55.5)},
    "dukemtmc": {"baseline": (7.3, 13.8, 2.1), "rw": (52.3, 68.1, 33.7),
                 "rw+t": (59.2, 73.8, 36.6), "rw+t+i": (61.3, 76.0, 36.8)},
    "mars": {"baseline": (6.5, 13.9, 2.8), "rw": (40.2, 56.1, 23.9),
             "rw+t": (44.0, 60.9, 26.3), "rw+t+i": (45.9, 61.7, 26.6)},
    "msmt17": {"baseline": (3.8, 7.6, 0.7), "rw": (9.8, 12.7, 3.1),
               "rw+t": (25.2, 38.8, 8.9), "rw+t+i": (28.6, 42.1, 10.0)},
}


def paper_rows(dataset: str) -> pd.DataFrame | None:
    """The paper's figures for ``dataset`` (columns row, paper-rank1, paper-rank5,
    paper-mAP), or None when the paper did not report it (e.g. the synthetic network)."""
    rows = TABLE1.get(dataset)
    if rows is None:
        return None
    return pd.DataFrame([{"row": row, "paper-rank1": r1, "paper-rank5": r5, "paper-mAP": m}
                         for row, (r1, r5, m) in rows.items()])
