"""The papermill runner: order, parameters, failure reporting."""
from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from mer_lib.errors import MerError
from mer_lib.runner import list_notebooks, resolve_run_dir, run_notebooks


def _write(path, *sources):
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_list_notebooks_orders_and_selects(tmp_path):
    for name in ("02_b", "01_a", "10_c", "notes"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    assert [p.stem for p in list_notebooks(tmp_path)] == ["01_a", "02_b", "10_c"]
    assert [p.stem for p in list_notebooks(tmp_path, ["02"])] == ["02_b"]
    with pytest.raises(MerError, match="no notebook"):
        list_notebooks(tmp_path, ["07"])


def test_run_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("MER_RUN_DIR", raising=False)
    assert resolve_run_dir("smoke", tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("MER_RUN_DIR", str(tmp_path / "env"))
    assert resolve_run_dir("smoke") == tmp_path / "env"
    assert (tmp_path / "env").is_dir()


def test_runner_passes_parameters_and_names_the_failing_notebook(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write(nbs / "01_ok.ipynb", 'profile = "quick"\nrun_dir = None\ndata_dir = None',
           "from pathlib import Path\n(Path(run_dir) / f'{profile}.txt').write_text('ran')")
    _write(nbs / "02_fails.ipynb", 'profile = "quick"\nrun_dir = None\ndata_dir = None',
           "raise RuntimeError('boom')")
    _write(nbs / "03_never.ipynb", 'profile = "quick"\nrun_dir = None\ndata_dir = None',
           "from pathlib import Path\n(Path(run_dir) / 'never.txt').write_text('x')")
    run = tmp_path / "run"
    with pytest.raises(MerError) as err:
        run_notebooks("smoke", run, notebooks_dir=nbs)
    assert "02_fails.ipynb" in str(err.value) and str(run / "notebooks" / "02_fails.ipynb") in str(err.value)
    assert "boom" in str(err.value)
    assert (run / "smoke.txt").read_text() == "ran"
    assert not (run / "never.txt").exists()
    assert (run / "notebooks" / "01_ok.ipynb").exists()
    with pytest.raises(MerError, match="unknown profile"):
        run_notebooks("huge", run, notebooks_dir=nbs)


def test_runner_records_time_and_peak_memory(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    # the notebook holds ~200 MB for a moment: the sampled peak of its kernel must see it
    _write(nbs / "01_mem.ipynb", 'profile = "quick"\nrun_dir = None\ndata_dir = None',
           "import time\nblock = bytearray(200 * 2**20)\nblock[::4096] = b'x' * len(block[::4096])\ntime.sleep(1.0)")
    run = tmp_path / "run"
    run_notebooks("smoke", run, notebooks_dir=nbs)
    from mer_lib.artifacts import read_json
    record = read_json(run / "pipeline_times.json")["01_mem"]
    assert record["profile"] == "smoke" and record["seconds"] > 1.0
    assert record["peak_rss_mb"] > 200
