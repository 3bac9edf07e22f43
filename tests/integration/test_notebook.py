"""The walkthrough notebook runs from top to bottom (fast setting) with this venv's Python."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trains real models for tens of seconds

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "fashion_mnist_cnn.ipynb"
KERNEL = "fmnist-test-python"  # a kernelspec made for this interpreter only


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch):
    """A kernelspec that runs ipykernel with ``sys.executable``, found first on JUPYTER_PATH.

    The `python3` spec that pip installs says just "python", which means whatever is first
    on PATH; this one cannot pick another interpreter.
    """
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def test_notebook_runs_in_its_fast_setting(venv_kernel, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("FMNIST_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("FMNIST_NOTEBOOK_RUNS", str(tmp_path / "runs"))  # not in the repo
    for name in ("seed", "default"):  # as a first run of the notebook leaves them: run again
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "config.json").write_text("{}")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))  # test only
    client = NotebookClient(
        nb,
        kernel_name=venv_kernel,
        timeout=300,  # seconds per cell
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "EPOCHS" in tagged[0].source
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert nb.cells[-1].outputs[0]["text"].strip() == sys.executable  # this venv's kernel
    assert "epoch 1/1" in text and "test accuracy" in text  # trained and evaluated
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    shows = sum(c.source.count("show(plots.") for c in nb.cells if c.cell_type == "code")
    assert len(pngs) == shows >= 8  # every figure was drawn
    assert (tmp_path / "runs" / "seed" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "default" / "metrics.json").is_file()


def test_committed_notebook_has_outputs_and_stays_small():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs for c in code[2:]), "commit the notebook executed (full run)"
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    text = "".join(o.get("text", "") for c in code for o in c.outputs)
    assert "epoch 10/10" in text  # the full seed recipe, not the fast test setting
    assert NOTEBOOK.stat().st_size < 2_000_000
