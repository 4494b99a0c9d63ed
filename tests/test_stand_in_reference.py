"""README's numbers come out here: this machine pretrains the stand-in docs/results used.

The stand-in's first epoch, pretrained pinned as every run pretrains it, must have the sha256
that ``dmnreid/experiments/reference_stand_in.json`` records for it (the machine that made
docs/results). Where it differs the test fails with what differs and what to do
(``python -m dmnreid.experiments stand-in`` prints the same).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dmnreid.config import RunConfig
from dmnreid.experiments.stand_in import check, reference


def test_this_machine_pretrains_the_stand_in_docs_results_were_made_with(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DMNREID_CACHE", str(tmp_path / "cache"))
    assert len(reference()["epochs-sha256"]) == RunConfig().source_epochs
    same, message = check(RunConfig(), epochs=1)
    assert same, message
