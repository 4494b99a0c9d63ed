"""The notebooks are executed against a real run directory, so they never rot, and are kept in
git without outputs, so diffs show code only."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a cell holds outputs; strip them"
            assert cell.execution_count is None, f"{path.name}: a cell holds an execution count"


def test_explore_run_executes_on_a_real_run(tiny_run, monkeypatch: pytest.MonkeyPatch):
    assert tiny_run["status"] == "finished:completed", tiny_run["log"][-3000:]
    monkeypatch.setenv("DMNREID_RUN_DIR", str(tiny_run["dir"]))
    monkeypatch.setenv("DMNREID_CACHE", tiny_run["cache"])  # the run's partition
    files = {p: p.stat().st_mtime_ns for p in tiny_run["dir"].rglob("*")}
    notebook = nbformat.read(NOTEBOOKS / "explore_run.ipynb", as_version=4)
    # one more cell: the notebook's recomputed scores, to hold them against the run's own
    notebook.cells.append(nbformat.v4.new_code_cell(
        "import json; print(json.dumps(summarise(cmc, mean_ap)))"))
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    # scores over hops, hop loss/accuracy, clusters vs identities, CMC, the query's top 10
    assert len(figures) == 5
    recomputed = json.loads(notebook.cells[-1].outputs[-1]["text"])
    recorded = json.loads((tiny_run["dir"] / "metrics.json").read_text())["final"]
    # the nodes scored the final model as it travels, the notebook the saved one: the same
    assert recomputed == pytest.approx(recorded, abs=1e-5)
    assert {p: p.stat().st_mtime_ns for p in tiny_run["dir"].rglob("*")} == files  # read only


def test_unification_executes_on_the_command_s_outputs(unification_out: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DMNREID_UNIFICATION_DIR", str(unification_out))
    notebook = nbformat.read(NOTEBOOKS / "unification.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1
    text = "".join(o.get("text", "") for o in outputs)
    assert "pick-one minus average" in text and "1 seed(s)" in text
