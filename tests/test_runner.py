"""The papermill runner: order, selection, paths, parameters, failure reporting."""
from __future__ import annotations

import json
import os
import tempfile

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from mer_lib import runner
from mer_lib.artifacts import read_json
from mer_lib.errors import MerError
from mer_lib.runner import (
    REPO_ROOT,
    launch_dir,
    list_notebooks,
    main,
    path_parameter,
    require_writable,
    resolve_data_dir,
    resolve_figures_dir,
    resolve_run_dir,
    run_notebooks,
)

PARAMETERS = 'profile = "quick"\nrun_dir = None\ndata_dir = None'
#: A notebook that records the parameters it was given, and fails while ``run_dir/fail`` exists.
RECORDS = ("import json, os\n"
           "json.dump({'profile': profile, 'run_dir': run_dir, 'data_dir': data_dir, 'cwd': os.getcwd()},\n"
           "          open(os.path.join(run_dir, 'params.json'), 'w'))")
FLAKY = "import os\nif os.path.exists(os.path.join(run_dir, 'fail')):\n    raise RuntimeError('boom')"


def _write(path, *sources):
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _no_permission(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


def test_list_notebooks_orders_and_selects(tmp_path):
    for name in ("02_b", "01_a", "10_c", "notes"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    assert [p.stem for p in list_notebooks(tmp_path)] == ["01_a", "02_b", "10_c"]
    for select in (["02"], ["2"], ["02_b"], ["b"], ["02_b.ipynb"], ["02_"]):
        assert [p.stem for p in list_notebooks(tmp_path, select)] == ["02_b"], select
    assert [p.stem for p in list_notebooks(tmp_path, ["10", "1", "01"])] == ["01_a", "10_c"]
    with pytest.raises(MerError, match="no notebook"):
        list_notebooks(tmp_path, ["07"])


@pytest.mark.parametrize("select", [["0"], ["99"], ["01", "99"], ["c_"], ["a_b"]])
def test_list_notebooks_rejects_an_unmatched_selection(tmp_path, select):
    for name in ("01_a", "02_b"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    with pytest.raises(MerError) as err:
        list_notebooks(tmp_path, select)
    message = str(err.value)
    assert f"matches {select[-1]!r}" in message and "'01'" not in message
    assert message.endswith("expected numbers or names of: 01_a, 02_b")


def test_list_notebooks_rejects_an_empty_selection(tmp_path):
    (tmp_path / "01_a.ipynb").write_text("{}")
    with pytest.raises(MerError, match=r"no notebooks selected \(--notebooks was given without a value\).*: 01_a$"):
        list_notebooks(tmp_path, [])


def test_main_rejects_empty_and_unmatched_notebooks_before_running_anything(tmp_path, capsys):
    run = tmp_path / "run"
    for argv in (["--notebooks"], ["--notebooks", "0"], ["--notebooks", "99"], ["--notebooks", "nothing"]):
        assert main(["--profile", "smoke", "--run-dir", str(run), *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: no notebook") and "01_data_preparation, 02_train_blackbox" in err, argv
    assert not run.exists()


def test_launch_dir_is_pwd_when_it_names_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PWD", str(tmp_path))
    assert launch_dir() == tmp_path
    for value in (str(tmp_path / "gone"), "relative", ""):
        monkeypatch.setenv("PWD", value)
        assert launch_dir() == REPO_ROOT
    monkeypatch.delenv("PWD")
    assert launch_dir() == REPO_ROOT


def test_path_parameter_types_and_relative_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert path_parameter("run_dir", None, tmp_path) is None
    assert path_parameter("run_dir", "a/../b", tmp_path) == tmp_path / "b"
    assert path_parameter("run_dir", tmp_path / "abs", "/elsewhere") == tmp_path / "abs"
    assert path_parameter("run_dir", "~/x", "/elsewhere") == tmp_path / "home" / "x"
    for value, shown in ((3, "the int 3"), (0, "the int 0"), (True, "the bool True"), (1.5, "the float 1.5"),
                         (b"x", "the bytes b'x'")):
        with pytest.raises(MerError) as err:
            path_parameter("run_dir", value, tmp_path)
        assert str(err.value).startswith(f"parameter run_dir: expected a path (a string) or None, got {shown};")
        assert "-p run_dir None gives the default" in str(err.value) and "-r run_dir <name>" in str(err.value)
    with pytest.raises(MerError, match="parameter data_dir: expected a path or None, got an empty string"):
        path_parameter("data_dir", " ", tmp_path)


def test_resolve_data_dir_names_the_folder_as_given_and_as_looked_for(tmp_path):
    (tmp_path / "ds" / "base").mkdir(parents=True)
    (tmp_path / "file.txt").write_text("x")
    assert resolve_data_dir("ds/base", tmp_path) == tmp_path / "ds" / "base"
    assert resolve_data_dir(None, tmp_path) is None
    with pytest.raises(MerError) as err:
        resolve_data_dir("ds/missing", tmp_path)
    assert str(err.value).startswith(f"data_dir 'ds/missing': {tmp_path / 'ds' / 'missing'} does not exist "
                                     f"(a relative data_dir is taken from the folder the command was run from, "
                                     f"{tmp_path});")
    with pytest.raises(MerError, match=r"data_dir 'file.txt': .*file.txt is not a folder"):
        resolve_data_dir("file.txt", tmp_path)


def test_run_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("MER_RUN_DIR", raising=False)
    assert resolve_run_dir("smoke", tmp_path / "x") == tmp_path / "x"
    assert resolve_run_dir("smoke", "rel/y", base=tmp_path) == tmp_path / "rel" / "y"
    assert (tmp_path / "rel" / "y").is_dir() and not list((tmp_path / "rel" / "y").iterdir())  # no probe left
    monkeypatch.setenv("MER_RUN_DIR", str(tmp_path / "env"))
    assert resolve_run_dir("smoke") == tmp_path / "env"
    assert (tmp_path / "env").is_dir()
    monkeypatch.setenv("MER_RUN_DIR", "relenv")
    assert resolve_run_dir("smoke", base=tmp_path) == tmp_path / "relenv"
    monkeypatch.setenv("MER_RUN_DIR", "3")
    assert resolve_run_dir("smoke", base=tmp_path) == tmp_path / "3"  # an environment variable is a string
    with pytest.raises(MerError, match="parameter run_dir: .*got the int 3"):
        resolve_run_dir("smoke", 3, base=tmp_path)


def test_figures_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("MER_FIGURES_DIR", raising=False)
    assert resolve_figures_dir(None, tmp_path) == runner.FIGURES_DIR
    assert resolve_figures_dir("figs", tmp_path) == tmp_path / "figs"
    monkeypatch.setenv("MER_FIGURES_DIR", "envfigs")
    assert resolve_figures_dir(None, tmp_path) == tmp_path / "envfigs"
    with pytest.raises(MerError, match="parameter figures_dir: .*got the int 1"):
        resolve_figures_dir(1, tmp_path)


def test_require_writable_names_the_folder(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MerError, match=rf"the run directory {tmp_path / 'file' / 'run'} cannot be created "
                                       r"\(Not a directory\); choose another run_dir"):
        require_writable(tmp_path / "file" / "run")
    monkeypatch.setattr(tempfile, "mkstemp", _no_permission)
    with pytest.raises(MerError, match=rf"the run directory {tmp_path} is not writable \(Permission denied\)"):
        require_writable(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write to a read-only folder")
def test_require_writable_on_a_read_only_folder(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    try:
        with pytest.raises(MerError, match="is not writable"):
            require_writable(tmp_path / "ro")
        with pytest.raises(MerError, match="cannot be created"):
            require_writable(tmp_path / "ro" / "run")
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_runner_checks_everything_before_running(tmp_path, monkeypatch):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write(nbs / "01_ok.ipynb", PARAMETERS, RECORDS)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MerError, match="unknown profile"):
        run_notebooks("huge", "run", notebooks_dir=nbs)
    with pytest.raises(MerError, match=rf"data_dir 'ds/none': {tmp_path / 'ds' / 'none'} does not exist"):
        run_notebooks("smoke", "run", "ds/none", notebooks_dir=nbs)
    with pytest.raises(MerError, match="no notebook"):
        run_notebooks("smoke", "run", select=["02"], notebooks_dir=nbs)
    with pytest.raises(MerError, match="unknown executor 'cluster'"):
        run_notebooks("smoke", "run", notebooks_dir=nbs, executor="cluster")
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(tempfile, "mkstemp", _no_permission)
    with pytest.raises(MerError, match=rf"the run directory {tmp_path / 'run'} is not writable"):
        run_notebooks("smoke", "run", notebooks_dir=nbs)
    assert not (tmp_path / "run" / "params.json").exists()


def test_runner_passes_absolute_paths_and_removes_stale_temps(tmp_path, monkeypatch):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write(nbs / "01_ok.ipynb", PARAMETERS, RECORDS)
    (tmp_path / "ds" / "base").mkdir(parents=True)
    stale = tmp_path / "run" / "models" / ".model.pt.4194305-abcd_123.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    keep = stale.parent / "notes.tmp"
    keep.write_text("mine")
    monkeypatch.chdir(tmp_path)
    assert run_notebooks("smoke", "run", "ds/base", notebooks_dir=nbs) == tmp_path / "run"
    params = json.loads((tmp_path / "run" / "params.json").read_text())
    assert params == {"profile": "smoke", "run_dir": str(tmp_path / "run"), "data_dir": str(tmp_path / "ds" / "base"),
                      "cwd": str(nbs)}
    assert not stale.exists() and keep.read_text() == "mine"
    executed = nbformat.read(tmp_path / "run" / "notebooks" / "01_ok.ipynb", as_version=4)
    assert executed.metadata.papermill.output_path == str(tmp_path / "run" / "notebooks" / "01_ok.ipynb")
    assert os.listdir(tmp_path / "run" / "notebooks") == ["01_ok.ipynb"]


@pytest.mark.slow
def test_runner_keeps_the_last_good_notebook_and_names_the_failed_one(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write(nbs / "01_ok.ipynb", PARAMETERS, RECORDS)
    _write(nbs / "02_flaky.ipynb", PARAMETERS, FLAKY)
    _write(nbs / "03_never.ipynb", PARAMETERS, "from pathlib import Path\n(Path(run_dir) / 'never.txt').write_text('x')")
    run, out = tmp_path / "run", tmp_path / "run" / "notebooks"
    run_notebooks("smoke", run, select=["02"], notebooks_dir=nbs)
    good = (out / "02_flaky.ipynb").read_bytes()
    (run / "fail").write_text("")
    with pytest.raises(MerError) as err:
        run_notebooks("smoke", run, notebooks_dir=nbs)
    assert str(err.value) == (f"notebook 02_flaky.ipynb failed (RuntimeError: boom); the traceback is in the executed "
                              f"notebook {out / '02_flaky.failed.ipynb'}; the last successful executed notebook "
                              f"{out / '02_flaky.ipynb'} is kept")
    assert (out / "02_flaky.ipynb").read_bytes() == good
    assert "boom" in (out / "02_flaky.failed.ipynb").read_text()
    assert (run / "params.json").exists() and not (run / "never.txt").exists()
    assert sorted(os.listdir(out)) == ["01_ok.ipynb", "02_flaky.failed.ipynb", "02_flaky.ipynb"]  # no temp file left
    (run / "fail").unlink()
    run_notebooks("smoke", run, select=["flaky"], notebooks_dir=nbs)
    assert sorted(os.listdir(out)) == ["01_ok.ipynb", "02_flaky.ipynb"]


def test_a_first_run_that_fails_names_the_failed_copy_only(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write(nbs / "01_fails.ipynb", PARAMETERS, "raise ValueError('bad')")
    with pytest.raises(MerError) as err:
        run_notebooks("smoke", tmp_path / "run", notebooks_dir=nbs)
    assert str(err.value) == (f"notebook 01_fails.ipynb failed (ValueError: bad); the traceback is in the executed "
                              f"notebook {tmp_path / 'run' / 'notebooks' / '01_fails.failed.ipynb'}")
    assert os.listdir(tmp_path / "run" / "notebooks") == ["01_fails.failed.ipynb"]


def test_runner_hands_the_executor_to_the_kernels(tmp_path, monkeypatch):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write(nbs / "01_env.ipynb", PARAMETERS, "import json, os\n"
           "json.dump(os.environ.get('MER_EXECUTOR'), open(os.path.join(run_dir, 'executor.json'), 'w'))")
    monkeypatch.delenv("MER_EXECUTOR", raising=False)
    run_notebooks("smoke", tmp_path / "run", notebooks_dir=nbs, executor="local:3")
    assert json.loads((tmp_path / "run" / "executor.json").read_text()) == "local:3"


def test_runner_records_time_and_peak_memory(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    # the notebook holds ~200 MB for a moment: the sampled peak of its kernel must see it
    _write(nbs / "01_mem.ipynb", PARAMETERS,
           "import time\nblock = bytearray(200 * 2**20)\nblock[::4096] = b'x' * len(block[::4096])\ntime.sleep(1.0)")
    run = tmp_path / "run"
    run_notebooks("smoke", run, notebooks_dir=nbs)
    record = read_json(run / "pipeline_times.json")["01_mem"]
    assert record["profile"] == "smoke" and record["seconds"] > 1.0
    assert record["peak_rss_mb"] > 200


def test_a_damaged_times_file_is_started_afresh_with_a_warning(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write(nbs / "01_ok.ipynb", PARAMETERS, "x = 1")
    run = tmp_path / "run"
    run.mkdir()
    (run / "pipeline_times.json").write_text('{"01_ok": {"seconds": 1.')
    with pytest.warns(UserWarning, match=r"pipeline_times\.json: damaged JSON file .*starting it afresh"):
        run_notebooks("smoke", run, notebooks_dir=nbs)
    assert set(read_json(run / "pipeline_times.json")) == {"01_ok"}
