"""examples/quickstart.ipynb runs end to end, and its saved copy shows the
summary table and the progress bar."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


def _stream_text(nb):
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream")


def test_quickstart_notebook_executes():
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs = []
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + env_path if env_path else "")
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        os.environ["PYTHONPATH"] = env_path
    text = _stream_text(nb)
    assert 'Model: "sequential' in text and "Total params: 9,610" in text
    assert "Epoch 20/20" in text and "\r41/41 ━━━━━━━━━━━━━━━━━━━━" in text and "/step" in text
    acc = float(text.split("test accuracy ")[1].split()[0])
    assert acc >= 0.95


def test_saved_notebook_shows_summary_and_progress_bar():
    import json

    nb = json.loads(NOTEBOOK.read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", []))
    assert "Layer (type)" in text and "Param #" in text and "Total params" in text
    assert "41/41 ━━━━" in text and ("ms/step" in text or "us/step" in text)
