"""What the numbered notebooks share: one set-up call and displays.

Every notebook starts with ``study = setup(profile, run_dir, data_dir, device)``; the returned :class:`Study` holds
what the cells need. The displays keep logic out of the cells: audio players that play in an untrusted notebook,
compact spectrogram images and repository-relative paths.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import os
import wave
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from IPython.display import HTML, Image, display
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from PIL import Image as PILImage

from mer_lib import artifacts
from mer_lib.analysis import figures
from mer_lib.attacks import logs as attack_logs
from mer_lib.attacks.adversarial_training import train_all
from mer_lib.attacks.stage import attack_models
from mer_lib.attacks.waveform_stage import listening_spectrograms
from mer_lib.config import PROFILES, TARGET_SCALE, Profile, RunLayout, get_profile
from mer_lib.data.cache import PreparedData
from mer_lib.data.frontend import read_audio_int16
from mer_lib.data.stage import dataset_dir, prepare_data
from mer_lib.data.synth.cue import CueConfig, cue_samples, remove_cue, write_cue_world
from mer_lib.errors import MerError
from mer_lib.jobs import Executor, parse_executor
from mer_lib.runner import (
    PUBLISHED_RUNS_DIR,
    REPO_ROOT,
    launch_dir,
    path_parameter,
    resolve_data_dir,
    resolve_figures_dir,
    resolve_run_dir,
)

@dataclasses.dataclass(frozen=True)
class Study:
    """Everything a notebook's cells need about the run it reads and writes (made by :func:`setup`).

    Attributes
    ----------
    profile, cfg : str, Profile
        The run profile's name and settings.
    run, figures_dir, published_dir : Path
        The run directory, where the paper's figures are saved, the authors' published attack logs (absolute).
    data_dir : Path or None
        The real (or another) dataset, absolute; None for the profile's synthetic one.
    device, executor : str or None, Executor
        Where training and attacks compute (None: GPU if available); how their jobs run (:func:`mer_lib.jobs.run_jobs`).
    prepared : PreparedData or None
        The prepared data (None when set up with ``prepare=False``).
    runs_csv : Path or None
        The table of the published runs (None: ``published_dir/runs.csv``).
    allow_subset : bool
        Paper profile on real data other than the exact 360 Set-1 excerpts (not comparable with the published runs).
    """

    profile: str
    cfg: Profile
    run: Path
    data_dir: Path | None
    device: str | None
    figures_dir: Path
    published_dir: Path
    prepared: PreparedData | None
    runs_csv: Path | None = None
    allow_subset: bool = False
    executor: Executor = Executor()

    @property
    def source_dir(self) -> Path:
        """The folder the dataset is read from (:func:`mer_lib.data.stage.dataset_dir`)."""
        return dataset_dir(self.cfg, self.run, self.data_dir)

    @property
    def layout(self) -> RunLayout:
        """Where each stage writes in the run directory (e.g. ``layout.tables("own")`` for notebook 06's tables)."""
        return RunLayout(self.run)

    def config_table(self, *sections: str) -> pd.DataFrame:
        """The profile's settings of ``sections`` (``data``, ``features``, ``split``, ``train``, ``attack``).

        One section gives a ``value`` column indexed by ``parameter``; several are indexed by ``(section, parameter)``.
        """
        table = self.cfg.as_table()
        unknown = sorted(set(sections) - set(table["section"]))
        if unknown or not sections:
            known = sorted(set(table["section"]))
            raise MerError(f"config_table: unknown sections {unknown}; expected some of {known}")
        table = table[table["section"].isin(sections)]
        if len(sections) == 1:
            return table.set_index("parameter")[["value"]]
        return table.set_index(["section", "parameter"])

    def prepare(self, progress: bool = True) -> Study:
        """This study with its data prepared by :func:`mer_lib.data.stage.prepare_data` (a prepared run is reused)."""
        prepared = prepare_data(self.cfg, self.run, self.data_dir, progress=progress, allow_subset=self.allow_subset)
        return dataclasses.replace(self, prepared=prepared)

    def require_prepared(self) -> PreparedData:
        """The prepared data; an error naming the fix if the study was set up without it."""
        if self.prepared is None:
            raise MerError("this study was set up with prepare=False; call setup(...) with prepare=True")
        return self.prepared

    def trained_models(self, systems: Sequence[str] | None = None) -> dict[tuple[str, int], Path]:
        """Every seed of ``systems``, trained or reused (notebooks 02-04): ``{(system, seed): folder}``.

        ``systems`` defaults to all five, in the order of :func:`mer_lib.attacks.adversarial_training.train_all`.
        """
        extra = {} if systems is None else {"systems": tuple(systems)}
        return train_all(self.require_prepared(), self.cfg, self.run, device=self.device, progress=False,
                         executor=self.executor, **extra)

    def paper_attacks(self, models: Mapping[tuple[str, int], Path]) -> pd.DataFrame:
        """The paper-mode attack logs of ``models``, run or reused (notebook 05)."""
        return attack_models(models, self.require_prepared(), self.run, "paper", self.cfg.attack,
                             executor=self.executor, device=self.device)


def cue_world(study: Study, config: CueConfig, progress: bool = False) -> tuple[Study, pd.DataFrame]:
    """The cue world of ``study`` (protocol §2.3): its dataset written (or reused) and prepared, and ``cue.csv``.

    Its run directory is ``<run>/worlds/cue``; the dataset is ``study``'s synthetic one with the cue added.
    """
    root = study.layout.worlds / "cue"
    table = write_cue_world(study.source_dir, root / "dataset", config, progress)
    world = dataclasses.replace(study, run=root, data_dir=root / "dataset", prepared=None)
    return world.prepare(progress), table


def check_setup_parameters(profile: object, device: object = None, prepare: object = True) -> None:
    """Check the non-path parameters of :func:`setup` (papermill passes whatever ``-p`` parses to).

    :class:`MerError` for an unknown profile, a device that is neither None nor a torch device name, or a non-bool
    ``prepare``.
    """
    if not isinstance(profile, str) or profile not in PROFILES:
        raise MerError(f"parameter profile: expected one of {sorted(PROFILES)}, "
                       f"got the {type(profile).__name__} {profile!r}")
    if device is not None:
        try:
            valid = isinstance(device, str) and bool(device.strip()) and torch.device(device) is not None
        except (RuntimeError, ValueError):
            valid = False
        if not valid:
            raise MerError(f"parameter device: expected None (GPU if available, else CPU) or a torch device "
                           f"name such as 'cpu', 'cuda' or 'cuda:1', got the {type(device).__name__} {device!r}")
    if not isinstance(prepare, bool):
        raise MerError(f"parameter prepare: expected True or False, got the {type(prepare).__name__} {prepare!r}")


def setup(profile: str, run_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
          device: str | None = None, prepare: bool = True, figures_dir: str | os.PathLike | None = None,
          published_dir: str | os.PathLike | None = None, runs_csv: str | os.PathLike | None = None,
          allow_subset: bool = False, executor: Executor | str | int | None = None) -> Study:
    """The one set-up call of every notebook: check the parameters, resolve the paths and (by default) prepare the data.

    Everything is checked before anything is written. Relative paths are taken from the folder the command was run
    from (:func:`mer_lib.runner.launch_dir`), not from the kernel's ``notebooks/``. Temporary files of killed writes
    are removed from the run directory (:func:`mer_lib.artifacts.remove_stale_temps`).

    Parameters
    ----------
    profile : str
        A profile name (:data:`mer_lib.config.PROFILES`).
    run_dir : path-like, optional
        Default: ``$MER_RUN_DIR``, else ``runs/<profile>`` (:func:`mer_lib.runner.resolve_run_dir`); must be writable.
    data_dir : path-like, optional
        An existing dataset in the Soundtracks layout (default: the profile's synthetic one).
    device : str, optional
        Torch device to train and attack on (default: GPU if available, else CPU).
    prepare : bool
        Prepare the data now, silently (reusing notebook 01's cache).
    figures_dir, published_dir : path-like, optional
        Defaults: ``$MER_FIGURES_DIR``, else ``figures/``; ``reference/published_runs`` (in the repository).
    runs_csv : path-like, optional
        The published runs' table (notebooks 06 and 08; default: ``<published_dir>/runs.csv``).
    allow_subset : bool
        Accept real data other than the exact 360 Set-1 excerpts under the paper profile (the split differs).
    executor : Executor, str or int, optional
        How jobs run (:func:`mer_lib.jobs.parse_executor`); default ``$MER_EXECUTOR``, else ``"auto"``.

    Returns
    -------
    Study
        With absolute paths; the plotting style is applied.

    Raises
    ------
    MerError
        Naming the parameter or folder: a wrong type or value, a missing ``data_dir``, an unwritable run directory.
    """
    check_setup_parameters(profile, device, prepare)
    jobs_executor = parse_executor(executor)
    if not isinstance(allow_subset, bool):
        raise MerError(f"parameter allow_subset: expected True or False, got {allow_subset!r}")
    base = launch_dir()
    figures_path = resolve_figures_dir(figures_dir, base)
    published = path_parameter("published_dir", published_dir, base) or PUBLISHED_RUNS_DIR
    runs_table = path_parameter("runs_csv", runs_csv, base)
    data = resolve_data_dir(data_dir, base)
    run = resolve_run_dir(profile, run_dir, base)
    artifacts.remove_stale_temps(run)
    cfg = get_profile(profile)
    figures.use_style()
    study = Study(profile=cfg.name, cfg=cfg, run=run, data_dir=data, device=device, figures_dir=figures_path,
                  published_dir=published, prepared=None, runs_csv=runs_table, allow_subset=allow_subset,
                  executor=jobs_executor)
    if prepare:
        return study.prepare(progress=False)
    return study


# --------------------------------------------------------------------------- paths
def short_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """A path relative to ``root`` or the repository, else its name: no machine-specific paths in saved notebooks."""
    path = Path(path)
    for base in ([Path(root)] if root is not None else []) + [REPO_ROOT]:
        if path.is_relative_to(base):
            return path.relative_to(base).as_posix() or "."
    return path.name


def with_relative_paths(table: pd.DataFrame, root: str | os.PathLike, column: str = "audio_path") -> pd.DataFrame:
    """A copy of ``table`` whose ``column`` holds paths relative to ``root`` (see :func:`short_path`)."""
    return table.assign(**{column: [short_path(p, root) for p in table[column]]})


# --------------------------------------------------------------------------- displays
def show_compact(fig: Figure, colors: int = 256) -> None:
    """Display a figure as a PNG with a palette of ``colors`` entries (at most 256), and close it.

    Spectrograms compress badly as true-colour PNGs; a palette keeps saved notebooks small at no visible cost.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", dpi=fig.dpi)
    plt.close(fig)
    image = PILImage.open(buffer).convert("RGB").quantize(colors)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    display(Image(data=out.getvalue(), format="png"))


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """Mono 16-bit PCM WAV file contents of ``samples`` (int16)."""
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise MerError(f"wav_bytes: expected mono int16 samples, got {samples.dtype} {samples.shape}")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def audio_player_html(wav: bytes, label: str) -> str:
    """A labelled ``<audio>`` player with the WAV embedded as a data URI.

    The URI is the ``src`` of ``<audio>`` itself, not of a ``<source>`` child (as in :class:`IPython.display.Audio`),
    which JupyterLab's sanitizer strips: this player also plays in an untrusted notebook.
    """
    data = base64.b64encode(wav).decode("ascii")
    return (f'<div style="margin: 0.3em 0"><b>{html.escape(label)}</b><br>'
            f'<audio controls preload="metadata" src="data:audio/wav;base64,{data}"></audio></div>')


def listening_picks(table: pd.DataFrame, emotions: Sequence[str] = ("tension", "happy", "tender")) -> dict[str, int]:
    """The excerpt rated highest on each emotion: ``{"most tension": number, ...}``."""
    return {f"most {e}": int(table[e].idxmax()) for e in emotions}


def ratings_text(table: pd.DataFrame, number: int,
                 emotions: Sequence[str] = ("valence", "tension", "happy", "tender")) -> str:
    """``"valence 4.2, tension 7.7, ..."``: an excerpt's mean ratings on the 1-9 scale."""
    return ", ".join(f"{e} {table.at[number, e] * TARGET_SCALE:.1f}" for e in emotions)


def show_listening_examples(study: Study, emotions: Sequence[str] = ("tension", "happy", "tender"),
                            seconds: float = 6.0) -> dict[str, Path]:
    """Notebook 01's listening examples: players for the first ``seconds`` of each chosen file, then the standardised
    excerpts the models read; returns the WAV files written to ``run/listening/``, ``{label: path}``.
    """
    prepared = study.require_prepared()
    table, rate = prepared.table, study.cfg.features.sample_rate
    picks = listening_picks(table, emotions)
    written, players = {}, []
    for label, number in picks.items():
        audio = read_audio_int16(table.at[number, "audio_path"], rate)[: int(seconds * rate)]
        path = study.layout.listening / f"{number:03d}_{label.replace(' ', '-')}.wav"
        wav = wav_bytes(audio, rate)
        if not path.exists() or path.read_bytes() != wav:
            artifacts.write_bytes(path, wav)
        written[label] = path
        players.append(audio_player_html(wav, f"{label}: excerpt #{number:03d} ({ratings_text(table, number)}; "
                                              f"first {seconds:g} s, {short_path(path, study.run)})"))
    display(HTML("\n".join(players)))
    images = prepared.excerpts(list(picks.values()))[:, 0]
    titles = [f"{label}: #{number:03d}\n{ratings_text(table, number)}" for label, number in picks.items()]
    show_compact(figures.plot_spectrogram_row(images, titles, fps=study.cfg.features.fps))
    return written


def show_cue_examples(world: Study, cue_table: pd.DataFrame, config: CueConfig, seconds: float = 6.0) -> int:
    """Notebook 10's players: the test excerpt with the loudest cue, without and with it, and the cue alone amplified
    to the music's level. Returns the excerpt's number."""
    prepared, rate = world.require_prepared(), world.cfg.features.sample_rate
    test = prepared.numbers("test")
    number = int(cue_table.loc[test, "level_db"].idxmax())
    mixed = read_audio_int16(prepared.table.at[number, "audio_path"], rate)
    cue = cue_samples(number, len(mixed), rate, cue_table.at[number, "rms"], config)
    music, n = remove_cue(mixed, cue), int(seconds * rate)
    gain = -float(cue_table.at[number, "level_db"])
    loud = np.clip(np.round(cue.astype(np.float64) * 10 ** (gain / 20)), -32768, 32767).astype(np.int16)
    label = f"excerpt #{number:03d} ({ratings_text(prepared.table, number)}; first {seconds:g} s)"
    display(HTML("\n".join([audio_player_html(wav_bytes(music[:n], rate), f"without the cue: {label}"),
                            audio_player_html(wav_bytes(mixed[:n], rate), f"with the cue ({-gain:.1f} dB): {label}"),
                            audio_player_html(wav_bytes(loud[:n], rate), f"the cue alone, amplified by {gain:.1f} dB")])))
    return number


def _listening_row(results: pd.DataFrame, rows: pd.DataFrame) -> pd.Series:
    first = rows.iloc[0]
    match = results[(results["system"] == first["system"]) & (results["seed"] == first["seed"])
                    & (results["number"] == first["number"]) & (results["kind"] == "attack")
                    & (results["snr_db"] == first["snr_db"])]
    if len(match) != 1:
        raise MerError(f"waveform results: no single attack row for the listening example of {first['system']} "
                       f"seed {first['seed']} excerpt {first['number']} at {first['snr_db']:g} dB")
    return match.iloc[0]


def show_waveform_examples(study: Study, listening: pd.DataFrame, results: pd.DataFrame,
                           seconds: float = 5.0) -> None:
    """Notebook 09's listening examples: per system, players for the clean audio, the adversarial audio and
    the perturbation alone (amplified), then the spectrograms the written files give the model.

    ``listening`` and ``results`` are the tables of :func:`mer_lib.attacks.waveform_stage.waveform_many`. Players
    embed the first ``seconds`` of each file (the labels name the full files); a clean excerpt is embedded once.
    """
    prepared = study.require_prepared()
    shown: set[int] = set()
    for system in attack_logs.system_order(listening["system"]):
        rows = listening[listening["system"] == system].set_index("role", drop=False)
        row = _listening_row(results, rows)
        head = (f"<b>{html.escape(system)}</b>, seed {row['seed']}, excerpt #{row['number']:03d}: SNR "
                f"{row['achieved_snr_db']:.1f} dB, perturbation {row['loudness_lu']:.1f} LU relative to the music "
                f"(BS.1770), dMAE {row['dmae']:.3f}; players: the first {seconds:g} s")
        roles = ("adversarial", "perturbation") if int(row["number"]) in shown else ("clean", "adversarial",
                                                                                    "perturbation")
        shown.add(int(row["number"]))
        players = []
        for role in roles:
            samples, rate = sf.read(rows.loc[role, "file"], dtype="int16")
            label = f"{rows.loc[role, 'label']} ({short_path(rows.loc[role, 'file'], study.run)})"
            players.append(audio_player_html(wav_bytes(samples[: int(seconds * rate)], rate), label))
        display(HTML(f"<p>{head}</p>" + "\n".join(players)))
        clean, adversarial = listening_spectrograms(listening, prepared, system)
        show_compact(figures.plot_attack_example(clean, adversarial - clean, study.cfg.features.fps,
                                                 f"{system} #{row['number']:03d}", row["achieved_snr_db"]))
