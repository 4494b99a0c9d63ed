"""Per-split counts of a dataset, in the form the `summary` command prints."""

from __future__ import annotations

from dmnreid.data_prep.records import SPLITS, ReidDataset


def summarise(dataset: ReidDataset) -> dict[str, dict[str, int]]:
    """Images, ids, cameras and tracklets per split.

    ``ids`` counts distinct pid values as torchreid does (distractors, pid 0, count as one id).
    ``tracklets`` follows the paper's setting: for image datasets the (identity, camera)
    groups, for video datasets the dataset's own tracks.
    """
    result = {}
    for name in SPLITS:
        samples = dataset.split(name)
        tracklets = (
            len(samples) if dataset.video else len({(s.pid, s.camid) for s in samples})
        )
        result[name] = {
            "images": sum(len(s.frames) for s in samples),
            "ids": len({s.pid for s in samples}),
            "cameras": len({s.camid for s in samples}),
            "tracklets": tracklets,
        }
    return result
