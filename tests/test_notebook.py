"""The notebooks' set-up call, their displays (audio players, compact images) and the study's device."""
from __future__ import annotations

import base64
import dataclasses
import html.parser
import io
import os
import re
import tempfile
import wave

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
from fakes import fake_prepared  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

from mer_lib import notebook  # noqa: E402
from mer_lib.errors import MerError  # noqa: E402
from mer_lib.jobs import Executor  # noqa: E402
from mer_lib.runner import PUBLISHED_RUNS_DIR, REPO_ROOT  # noqa: E402

#: What JupyterLab 4's HTML sanitizer keeps in an untrusted output (packages/apputils/src/sanitizer.ts):
#: the tags and attributes the players use. ``src`` is kept on ``<audio>`` but not on ``<source>``.
LAB_ALLOWED = {"div": {"style"}, "b": set(), "br": set(), "audio": {"controls", "preload", "src"}}


@pytest.fixture(autouse=True)
def _restore_style():
    with matplotlib.rc_context():
        yield
    plt.close("all")


@pytest.fixture()
def shown(monkeypatch) -> list:
    """What the notebook helpers display, instead of an IPython front end."""
    out: list = []
    monkeypatch.setattr(notebook, "display", out.append)
    return out


def test_setup_without_data(tmp_path):
    study = notebook.setup("smoke", tmp_path / "run", prepare=False, figures_dir=tmp_path / "figs")
    assert study.profile == "smoke" and study.cfg.name == "smoke" and study.run == tmp_path / "run"
    assert study.run.is_dir() and study.prepared is None and study.data_dir is None and study.device is None
    assert study.figures_dir == tmp_path / "figs" and study.published_dir == PUBLISHED_RUNS_DIR
    assert study.runs_csv is None
    assert study.source_dir == (tmp_path / "run" / "data" / "soundtracks_synthetic").resolve()
    assert study.layout.tables("own") == tmp_path / "run" / "tables" / "own"
    with pytest.raises(MerError, match="prepare=False"):
        study.trained_models()
    with pytest.raises(AttributeError):
        study.run = tmp_path  # frozen


@pytest.mark.parametrize("kwargs, message", [
    ({"profile": 3}, "parameter profile: expected one of ['paper', 'paper-synthetic', 'quick', 'smoke'], "
                     "got the int 3"),
    ({"profile": "huge"}, "parameter profile: expected one of ['paper', 'paper-synthetic', 'quick', 'smoke'], "
                          "got the str 'huge'"),
    ({"run_dir": 3}, "parameter run_dir: expected a path (a string) or None, got the int 3; with papermill, "
                     "-p run_dir None gives the default and a folder named like a number needs -r run_dir <name>"),
    ({"data_dir": 0}, "parameter data_dir: expected a path (a string) or None, got the int 0;"),
    ({"data_dir": ""}, "parameter data_dir: expected a path or None, got an empty string"),
    ({"device": 0}, "parameter device: expected None (GPU if available, else CPU) or a torch device name such as "
                    "'cpu', 'cuda' or 'cuda:1', got the int 0"),
    ({"device": "gpu"}, "parameter device: expected None .* got the str 'gpu'"),
    ({"device": ""}, "parameter device: expected None .* got the str ''"),
    ({"prepare": "no"}, "parameter prepare: expected True or False, got the str 'no'"),
    ({"executor": "gpu"}, "unknown executor 'gpu'; expected 'auto', 'inprocess', 'local', 'local:N', 'ray'"),
    ({"figures_dir": 1.5}, "parameter figures_dir: expected a path (a string) or None, got the float 1.5"),
    ({"published_dir": True}, "parameter published_dir: expected a path (a string) or None, got the bool True"),
    ({"runs_csv": 0}, "parameter runs_csv: expected a path (a string) or None, got the int 0"),
])
def test_setup_rejects_parameters_of_the_wrong_type(tmp_path, kwargs, message):
    arguments = {"profile": "smoke", "run_dir": tmp_path / "run", "prepare": False, **kwargs}
    with pytest.raises(MerError) as err:
        notebook.setup(**arguments)
    assert re.match(message if ".*" in message else re.escape(message), str(err.value))
    assert not (tmp_path / "run").exists()  # nothing is created before every parameter is checked


def test_setup_takes_relative_paths_from_the_launch_folder(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "ds").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # where papermill --cwd and Jupyter run the kernel
    monkeypatch.setenv("PWD", str(tmp_path))  # where the command was run
    monkeypatch.delenv("MER_RUN_DIR", raising=False)
    monkeypatch.delenv("MER_FIGURES_DIR", raising=False)
    study = notebook.setup("smoke", "runs/x", "ds", prepare=False, figures_dir="figs", published_dir="pub",
                           runs_csv="pub/runs.csv")
    assert study.run == tmp_path / "runs" / "x" and study.run.is_dir()
    assert study.data_dir == tmp_path / "ds" and study.source_dir == (tmp_path / "ds").resolve()
    assert study.figures_dir == tmp_path / "figs" and study.published_dir == tmp_path / "pub"
    assert study.runs_csv == tmp_path / "pub" / "runs.csv"
    monkeypatch.setenv("MER_RUN_DIR", "runs/env")
    assert notebook.setup("smoke", prepare=False).run == tmp_path / "runs" / "env"
    with pytest.raises(MerError) as err:
        notebook.setup("smoke", "runs/y", "ds/missing", prepare=False)
    assert str(err.value).startswith(f"data_dir 'ds/missing': {tmp_path / 'ds' / 'missing'} does not exist (a relative "
                                     f"data_dir is taken from the folder the command was run from, {tmp_path});")
    assert not (tmp_path / "runs" / "y").exists()


def test_setup_names_a_run_directory_it_cannot_write(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MerError, match=rf"the run directory {tmp_path / 'file' / 'run'} cannot be created"):
        notebook.setup("smoke", tmp_path / "file" / "run", prepare=False)

    def no_permission(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", no_permission)
    with pytest.raises(MerError, match=rf"the run directory {tmp_path / 'run'} is not writable \(Permission denied\)"):
        notebook.setup("smoke", tmp_path / "run", prepare=False)


def test_setup_removes_temp_files_of_killed_writes(tmp_path):
    models = tmp_path / "run" / "models" / "A2E" / "seed1-abc"
    models.mkdir(parents=True)
    (models / ".model.pt.4194305-k3j_x9a2.tmp").write_bytes(b"half a model")
    (models / "model.pt").write_bytes(b"a model")
    notebook.setup("smoke", tmp_path / "run", prepare=False)
    assert os.listdir(models) == ["model.pt"]


def test_config_table_one_or_several_sections(tmp_path):
    study = notebook.setup("smoke", tmp_path, prepare=False)
    train = study.config_table("train")
    assert train.index.name == "parameter" and list(train.columns) == ["value"]
    assert train.loc["seeds", "value"] == str(study.cfg.train.seeds)
    several = study.config_table("data", "split")
    assert several.index.names == ["section", "parameter"]
    assert set(several.index.get_level_values(0)) == {"data", "split"}
    with pytest.raises(MerError, match="unknown sections"):
        study.config_table("optimiser")


def test_setup_prepares_and_the_study_runs_the_stages(tmp_path, monkeypatch):
    prepared = fake_prepared(tmp_path)
    calls = {}

    def fake_prepare(cfg, run, data_dir, progress, allow_subset=False):
        calls["prepare"] = (cfg.name, run, data_dir, progress)
        calls["allow_subset"] = allow_subset
        return prepared

    monkeypatch.setattr(notebook, "prepare_data", fake_prepare)
    monkeypatch.setattr(notebook, "train_all", lambda *a, **k: calls.setdefault("train", (a, k)) and {"m": 1})
    monkeypatch.setattr(notebook, "attack_models", lambda *a, **k: calls.setdefault("attack", (a, k)))
    (tmp_path / "data").mkdir()
    study = notebook.setup("smoke", tmp_path / "run", tmp_path / "data", device="cpu",
                           published_dir=tmp_path / "pub", executor="local:3")
    assert study.prepared is prepared and calls["prepare"] == ("smoke", tmp_path / "run", tmp_path / "data", False)
    assert study.data_dir == tmp_path / "data" and study.source_dir == (tmp_path / "data").resolve()
    assert study.published_dir == tmp_path / "pub"
    study.trained_models()
    args, kwargs = calls["train"]
    executor = Executor("local", 3)
    assert args == (prepared, study.cfg, study.run)
    assert kwargs == {"device": "cpu", "progress": False, "executor": executor}
    calls.pop("train")
    study.trained_models(["A2E"])
    assert calls["train"][1]["systems"] == ("A2E",)
    study.paper_attacks({("A2E", 1): tmp_path})
    assert calls["attack"] == (({("A2E", 1): tmp_path}, prepared, study.run, "paper", study.cfg.attack),
                               {"executor": executor, "device": "cpu"})
    assert study.prepare(progress=True).prepared is prepared and calls["prepare"][3] is True


def test_short_path_never_shows_an_absolute_path(tmp_path):
    assert notebook.short_path(REPO_ROOT / "reference" / "published_runs") == "reference/published_runs"
    assert notebook.short_path(tmp_path / "run" / "tables" / "own", tmp_path / "run") == "tables/own"
    assert notebook.short_path(tmp_path / "elsewhere" / "logs") == "logs"
    assert notebook.short_path(tmp_path, tmp_path) == "."
    table = pd.DataFrame({"audio_path": [str(tmp_path / "Set1" / "001.wav")], "x": [1]})
    assert notebook.with_relative_paths(table, tmp_path)["audio_path"].tolist() == ["Set1/001.wav"]
    assert table["audio_path"].iloc[0].startswith(str(tmp_path))  # the input is left alone


def test_wav_bytes_round_trip():
    samples = (np.sin(np.arange(2205) / 5) * 20000).astype(np.int16)
    data = notebook.wav_bytes(samples, 22050)
    with wave.open(io.BytesIO(data)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()) == (1, 2, 22050, 2205)
    np.testing.assert_array_equal(sf.read(io.BytesIO(data), dtype="int16")[0], samples)
    with pytest.raises(MerError, match="mono int16"):
        notebook.wav_bytes(samples.astype(np.float32), 22050)


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_audio_player_survives_the_jupyterlab_sanitizer():
    wav = notebook.wav_bytes(np.zeros(100, np.int16), 8000)
    parser = _Tags()
    parser.feed(notebook.audio_player_html(wav, "most <tense> & loud"))
    for tag, attrs in parser.tags:
        assert tag in LAB_ALLOWED and set(attrs) <= LAB_ALLOWED[tag], (tag, attrs)
    audio = dict(parser.tags)["audio"]
    assert audio["src"].startswith("data:audio/wav;base64,")
    assert base64.b64decode(audio["src"].split(",", 1)[1]) == wav
    assert "".join(parser.text) == "most <tense> & loud"


def test_listening_picks_and_ratings_text():
    table = pd.DataFrame({"tension": [0.2, 0.8, 0.3], "happy": [0.9, 0.1, 0.2], "valence": [0.5, 0.4, 0.3]},
                         index=[7, 8, 9])
    assert notebook.listening_picks(table, ("tension", "happy")) == {"most tension": 8, "most happy": 7}
    assert notebook.ratings_text(table, 8, ("valence", "tension")) == "valence 4.0, tension 8.0"


def test_show_compact_displays_a_palette_png(shown):
    fig, ax = plt.subplots()
    ax.imshow(np.random.default_rng(0).random((40, 60)))
    notebook.show_compact(fig, colors=32)
    assert len(shown) == 1 and not plt.get_fignums()
    image = PILImage.open(io.BytesIO(shown[0].data))
    assert image.format == "PNG" and image.mode == "P" and len(image.getcolors()) <= 32


def test_show_listening_examples_writes_labelled_snippets(tmp_path, shown, monkeypatch):
    prepared = fake_prepared(tmp_path)
    rate = 8000
    paths = []
    for number in prepared.table.index:
        path = tmp_path / "audio" / f"{number:03d}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, np.full(3 * rate, number, np.int16), rate, subtype="PCM_16")
        paths.append(str(path))
    prepared.table["audio_path"] = paths
    study = notebook.setup("smoke", tmp_path / "run", prepare=False)
    features = dataclasses.replace(study.cfg.features, sample_rate=rate, fps=10.0)
    study = dataclasses.replace(study, prepared=prepared, cfg=dataclasses.replace(study.cfg, features=features))
    written = notebook.show_listening_examples(study, ("tension", "happy"), seconds=1.5)
    picks = notebook.listening_picks(prepared.table, ("tension", "happy"))
    assert list(written) == ["most tension", "most happy"]
    for label, path in written.items():
        number = picks[label]
        assert path == tmp_path / "run" / "listening" / f"{number:03d}_{label.replace(' ', '-')}.wav"
        samples = sf.read(path, dtype="int16")[0]
        assert len(samples) == int(1.5 * rate) and (samples == number).all()
    players, image = shown
    parser = _Tags()
    parser.feed(players.data)
    assert [t for t, _ in parser.tags].count("audio") == 2
    text = "".join(parser.text)
    assert f"most tension: excerpt #{picks['most tension']:03d}" in text and "listening/" in text
    assert image.format == "png"
    before = {p: p.stat().st_mtime_ns for p in written.values()}
    notebook.show_listening_examples(study, ("tension", "happy"), seconds=1.5)
    assert {p: p.stat().st_mtime_ns for p in written.values()} == before  # identical snippets are not rewritten


# --------------------------------------------------------------------------
# The study's device reaches every stage
# --------------------------------------------------------------------------
class _Submitted(Exception):
    """Raised by the fake job runner once it has seen the jobs."""


def test_the_studys_device_reaches_every_stages_jobs(tmp_path, monkeypatch):
    from mer_lib.attacks import stage as attack_stage
    from mer_lib.attacks import waveform_stage
    from mer_lib.config import TrainConfig, get_profile
    from mer_lib.models import gain, heads
    from mer_lib.models import stage as model_stage

    prepared = fake_prepared(tmp_path)
    profile = dataclasses.replace(get_profile("smoke"), train=TrainConfig(
        width=0.0625, max_epochs=1, patience=1, lr=1e-3, batch_size=4, seeds=(3,), val_drop_last=False))
    models = model_stage.train_systems(prepared, ["A2E", "A2M2E"], profile, tmp_path / "run", device="cpu",
                                       progress=False, executor=0)
    study = notebook.Study(profile="smoke", cfg=profile, run=tmp_path / "run", data_dir=None, device="cuda:3",
                           figures_dir=tmp_path, published_dir=tmp_path, prepared=prepared)
    seen = []

    def fake_run_jobs(fn, jobs, executor=None, **kw):
        seen.append((kw.get("device"), {job.device for job in jobs}))
        raise _Submitted

    def fake_load(path, device="cpu"):
        seen.append((str(device), {str(device)}))
        raise _Submitted

    for module in (attack_stage, waveform_stage, model_stage):
        monkeypatch.setattr(module, "run_jobs", fake_run_jobs)
    monkeypatch.setattr(gain, "load_model_dir", fake_load)
    monkeypatch.setattr(heads, "load_model_dir", fake_load)
    # the waveform stage's plan needs audio the fake data lack: every model unfinished, no peers
    monkeypatch.setattr(waveform_stage, "_plan", lambda items, *a: ([tmp_path / "none"] * len(items),
                                                                     [((), False)] * len(items)))
    cfg, dev = profile.attack, study.device
    calls = {
        "training": lambda: study.trained_models(["A2E", "aA2E"]),
        "paper attacks": lambda: study.paper_attacks(models),
        "bounded sweep": lambda: attack_stage.bounded_sweep(models, prepared, study.run, cfg, device=dev),
        "plateau check": lambda: attack_stage.plateau_check(models, prepared, study.run, cfg, norm="l2", device=dev),
        "gains": lambda: gain.model_gains(models, prepared.excerpts(prepared.numbers("test")), dev),
        "ridge sweep": lambda: heads.ridge_sweep(models, prepared, study.run, profile.train, device=dev),
        "head swap": lambda: heads.head_swap(models, prepared, study.run, profile.train, dev),
        "waveform attacks": lambda: waveform_stage.waveform_many(models, prepared, study.run, device=dev),
    }
    for name, call in calls.items():
        seen.clear()
        with pytest.raises(_Submitted):
            call()
        assert seen and seen[0] == ("cuda:3", {"cuda:3"}), name
    variants = pd.DataFrame({"model_dir": [str(d) for d in models.values()], "system": ["A2E", "A2M2E"],
                             "seed": [3, 3]})
    seen.clear()
    with pytest.raises(_Submitted):
        attack_stage.attack_variants(variants, prepared, study.run, "paper", cfg, device=dev)
    assert seen == [("cuda:3", {"cuda:3"})]
