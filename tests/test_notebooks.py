"""The notebooks in notebooks/ run top to bottom on their own small synthetic data (nbclient)."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_three_notebooks_without_outputs():
    import nbformat

    assert [p.name for p in NOTEBOOKS] == ["01-quickstart.ipynb", "02-inspect-mask.ipynb", "03-nightly-history.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code"), f"{path.name}: outputs not stripped"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    tmp = tmp_path / "tmp"  # the kernel's temporary directory: what the notebook writes, and leaves
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # figures drawn
    said = "".join(o.get("text", "") for o in outputs)
    (work,) = [line.split()[2].rstrip(";") for line in said.splitlines() if line.startswith("writing to ")]
    assert Path(work).parent == tmp and f"removed {work}" in said  # it said where, and removed it
    assert [p.name for p in tmp.iterdir() if p.name.startswith("rmm-")] == []
    if path.stem.startswith("01"):
        assert any("dashboard: http" in o.get("text", "") for o in outputs)
        shown = [line for o in outputs for line in o.get("text", "").splitlines() if line.endswith(".png")]
        assert any(n.startswith("mask_module") for n in shown) and any(n.startswith("snr") for n in shown), shown


def test_quickstart_uses_the_public_api_only():
    """Notebook 01 is what a newcomer copies: rmm_dask's top-level names (and the synthetic test data), no internals."""
    import re

    import nbformat

    import rmm_dask

    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    modules = set(re.findall(r"(?:from|import) (rmm_dask[.\w]*)", code))
    assert modules == {"rmm_dask", "rmm_dask.synth"}, modules
    used = set(re.findall(r"rmm_dask\.(\w+)\(", code))
    assert used and used <= set(rmm_dask.__all__), used - set(rmm_dask.__all__)
