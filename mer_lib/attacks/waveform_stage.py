"""The waveform-attack stage (protocol §6.3): many trained models attacked in the audio domain, resumable, as jobs.

:func:`waveform_many` attacks every trained model folder with :mod:`mer_lib.attacks.waveform` at every SNR of a
:class:`WaveformConfig`, next to white and pink noise at the same SNRs, on the first ``n_excerpts`` test excerpts
whose file is at least as long as the excerpt (wrap-padded ones have no contiguous audio: skipped and listed).
One model is one job of :func:`mer_lib.jobs.run_jobs`; each job also

* feeds its adversaries at ``transfer_snr_db`` to the other systems' models of its seed and to its own (the
  diagonal), a gradient-masking check;
* writes those at ``roundtrip_snr_db`` to 16-bit WAV and reads them back through the data pipeline
  (:func:`mer_lib.attacks.waveform.roundtrip_excerpt`): how much dMAE survives;
* for every system's first seed, writes listening examples of its first excerpt at ``listening_snr_db`` (clean,
  adversarial, and the perturbation alone, amplified by the gain in its file name).

Every job writes ``run_dir/attacks/waveform/<system>/seed<seed>-<hash>/``:

``config.json``      everything the result depends on (hashed into the folder name)
``results.csv``      one row per (excerpt, kind, SNR): ``kind`` is ``attack``, ``white`` or ``pink``
``transfer.csv``     one row per (target model, excerpt)
``roundtrip.csv``    one row per excerpt
``listening.csv``    the listening examples (files in ``listening/``)
``checksums.json``   size and SHA-256 of every file above
``summary.json``     written last (marks a finished result); also counts the example passes

The hash covers the model's and the transfer targets' weights, the data (audio, front end, statistics, offsets,
labels, attacked excerpts), the settings that change results and :data:`WAVEFORM_VERSION`. Files are written
atomically. A finished folder is reused, never overwritten; a damaged one is computed again with a warning.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from mer_lib import artifacts
from mer_lib.attacks.logs import SUMMARY_FILE, bottleneck_columns, tidy_columns
from mer_lib.attacks.stage import model_fingerprint
from mer_lib.attacks.waveform import (
    NOISE_KINDS,
    UPDATES,
    Budget,
    ExcerptAudio,
    SegmentBatch,
    achieved_snr_db,
    attack_frontend,
    emotion_damage,
    excerpt_audio,
    linf_int16,
    loudness_lufs,
    noise_perturbation,
    predict_segments,
    relative_loudness,
    roundtrip_excerpt,
    stack_segments,
    unit_noise,
    waveform_attack,
    write_wav_int16,
)
from mer_lib.config import EMOTIONS, FeatureConfig, Profile, RunLayout, check_choice
from mer_lib.data.cache import PreparedData
from mer_lib.data.frontend import spectrogram_from_file
from mer_lib.errors import MerError
from mer_lib.jobs import Executor, run_jobs
from mer_lib.models.stage import data_fingerprint, load_model_dir
from mer_lib.models.train import deterministic_mode, resolve_device

#: Bumped whenever a code change alters waveform-attack results; part of every result's hash.
WAVEFORM_VERSION: int = 2

#: Kinds of perturbation in ``results.csv``.
KINDS: tuple[str, ...] = ("attack", *NOISE_KINDS)

#: The result files of a waveform attack (recorded in ``checksums.json`` with the listening WAVs).
RESULT_FILES: tuple[str, ...] = ("results.csv", "transfer.csv", "roundtrip.csv", "listening.csv")

#: A waveform attack's result folder: ``summary.json`` is written last and marks a finished result.
RESULTS = artifacts.CachedStage(SUMMARY_FILE, RESULT_FILES, "recomputing the waveform attack")

#: Peak of an amplified perturbation in a listening example (-6 dBFS).
LISTENING_PEAK: float = 0.5

FFT_DTYPES = {"float32": None, "float64": torch.float64}


def _non_negative_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0


def _positive_int(value: object) -> bool:
    return _non_negative_int(value) and value >= 1


@dataclasses.dataclass(frozen=True)
class WaveformConfig:
    """Settings of the waveform-attack stage; the defaults fit the quick profile's budget.

    Attributes
    ----------
    snr_db : tuple of float
        SNR budgets in dB (each an L2 ball per excerpt); attacked from high (small budget) to low.
    steps, update, step_scale : int, str, float
        Steps of every attack; ``"l2"`` (L2-normalised gradient) or ``"sign"``; step size in ``radius / steps``.
    warm_start : bool
        Start each SNR from the previous (smaller, nested) budget's adversary: the objective cannot fall as the budget
        grows, so :func:`mer_lib.analysis.robustness.monotonicity` checks the models, not the optimiser. ``False``:
        independent attacks, a stricter check.
    linf : float, optional
        An L-infinity bound in int16 units applied together with every SNR.
    n_excerpts : int, optional
        The first test excerpts (split order) whose file is long enough; ``None``: all of them.
    noise_kinds : tuple of str
        Noise baselines at every SNR (``"white"``, ``"pink"``).
    noise_seed : int
        Seed of the noise (per excerpt ``[noise_seed, number, kind]``).
    fft_dtype : str
        ``"float32"`` (fast) or ``"float64"`` (the cache's precision).
    batch_size : int
        Excerpts attacked together (memory and speed only, not hashed).
    transfer_snr_db, roundtrip_snr_db, listening_snr_db : float, optional
        The SNR (one of ``snr_db``) of the transfer check, the 16-bit round trip and the listening examples; ``None``
        skips it.
    """

    snr_db: tuple[float, ...] = (50.0, 40.0, 30.0, 20.0)
    steps: int = 4
    update: str = "l2"
    step_scale: float = 2.5
    warm_start: bool = True
    linf: float | None = None
    n_excerpts: int | None = 5
    noise_kinds: tuple[str, ...] = NOISE_KINDS
    noise_seed: int = 0
    fft_dtype: str = "float32"
    batch_size: int = 8
    transfer_snr_db: float | None = 30.0
    roundtrip_snr_db: float | None = 30.0
    listening_snr_db: float | None = 30.0
    split: str = "test"

    def __post_init__(self) -> None:
        for name in ("snr_db", "noise_kinds"):  # a list given is kept as a tuple (hashable, like the defaults)
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if not isinstance(self.snr_db, tuple) or not self.snr_db or len(set(self.snr_db)) != len(self.snr_db):
            raise MerError(f"WaveformConfig.snr_db must be distinct SNRs in dB, got {self.snr_db!r}")
        for snr in self.snr_db:
            Budget(snr_db=snr, linf=self.linf)
        for name in ("steps", "batch_size"):
            if not _positive_int(getattr(self, name)):
                raise MerError(f"WaveformConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.n_excerpts is not None and not _positive_int(self.n_excerpts):
            raise MerError(f"WaveformConfig.n_excerpts must be a positive integer or None, got {self.n_excerpts!r}")
        check_choice("WaveformConfig.update", self.update, UPDATES)
        check_choice("WaveformConfig.fft_dtype", self.fft_dtype, tuple(FFT_DTYPES))
        if not isinstance(self.noise_kinds, tuple):
            raise MerError(f"WaveformConfig.noise_kinds must be a tuple of {list(NOISE_KINDS)}, "
                           f"got {self.noise_kinds!r}")
        for kind in self.noise_kinds:
            check_choice("WaveformConfig.noise_kinds", kind, NOISE_KINDS)
        if not (isinstance(self.step_scale, (int, float)) and math.isfinite(self.step_scale) and self.step_scale > 0):
            raise MerError(f"WaveformConfig.step_scale must be a positive number, got {self.step_scale!r}")
        if not isinstance(self.warm_start, bool):
            raise MerError(f"WaveformConfig.warm_start must be True or False, got {self.warm_start!r}")
        if not _non_negative_int(self.noise_seed):
            raise MerError(f"WaveformConfig.noise_seed must be a non-negative integer, got {self.noise_seed!r}")
        for name in ("transfer_snr_db", "roundtrip_snr_db", "listening_snr_db"):
            value = getattr(self, name)
            if value is not None and value not in self.snr_db:
                raise MerError(f"WaveformConfig.{name} must be one of snr_db {list(self.snr_db)} or None, "
                               f"got {value!r}")

    def settings(self) -> dict:
        """The settings that change results (hashed); ``batch_size`` does not."""
        out = dataclasses.asdict(self)
        out.pop("batch_size")
        out["snr_db"] = [float(s) for s in self.snr_db]
        return out


def select_excerpts(prepared: PreparedData, n_excerpts: int | None = None,
                    split: str = "test") -> tuple[list[int], list[int]]:
    """The excerpts a waveform attack can use: ``(chosen, skipped)`` numbers, in split order.

    Excerpts whose file is shorter than the excerpt were wrap-padded and are skipped; ``chosen`` are the first
    ``n_excerpts`` of the others (all if ``None``). Raises :class:`MerError` if none is long enough (naming files).
    """
    numbers = [int(n) for n in prepared.numbers(split)]
    frames = prepared.table.loc[numbers, "frames"].astype(int)
    usable = [n for n in numbers if frames[n] >= int(prepared.excerpt_frames)]
    skipped = [n for n in numbers if n not in usable]
    if not usable:
        files = [str(prepared.table.at[n, "audio_path"]) for n in skipped[:5]]
        raise MerError(f"no {split} excerpt is long enough for a waveform attack: every file has fewer than "
                       f"{prepared.excerpt_frames} frames (padded by wrapping), e.g. {files}")
    return (usable if n_excerpts is None else usable[: int(n_excerpts)]), skipped


def _data_key(prepared, numbers: list[int]) -> dict:
    return {"fingerprint": data_fingerprint(prepared), "numbers": [int(n) for n in numbers]}


def _result_key(config: WaveformConfig, model: tuple[str, int, str], peers: Sequence[tuple[str, int, str]],
                data: dict, listening: bool) -> dict:
    """Everything one result depends on: ``model`` and ``peers`` are ``(system, seed, weights sha256)``."""
    return {"waveform_version": WAVEFORM_VERSION, "settings": config.settings(), "system": model[0],
            "seed": model[1], "model_sha256": model[2], "data": data, "listening": bool(listening),
            "transfer_targets": [list(p) for p in sorted(peers)]}


def waveform_dir(run_dir: str | os.PathLike, system: str, seed: int, digest: str) -> Path:
    """``run_dir/attacks/waveform/<system>/seed<seed>-<digest>``."""
    return RunLayout(run_dir).attacks / "waveform" / system / f"seed{int(seed)}-{digest}"


# --------------------------------------------------------------------------
# One model
# --------------------------------------------------------------------------
class _Context(NamedTuple):
    """What every part of one job needs."""

    system: str
    seed: int
    config: WaveformConfig
    features: FeatureConfig
    frontend: torch.nn.Module
    mean: float
    std: float
    sample_rate: int


def _prediction_columns(prefix: str, emotions: np.ndarray, bottleneck: np.ndarray | None) -> dict:
    out = dict(zip(tidy_columns(prefix), np.asarray(emotions, np.float64).T))
    if bottleneck is not None:
        out.update(zip(bottleneck_columns(prefix), np.asarray(bottleneck, np.float64).T))
    return out


class _Batch(NamedTuple):
    """One batch of a job: segments, labels, the clean segments' loudness (LUFS)."""

    segments: SegmentBatch
    y: np.ndarray
    lufs: np.ndarray


def _rows(ctx: _Context, part: _Batch, kind: str, snr: float, clean: tuple, adv: tuple, delta: torch.Tensor,
          best_step: np.ndarray) -> pd.DataFrame:
    """One row per excerpt of one perturbation kind at one SNR."""
    batch, y = part.segments, part.y
    dmae, change = emotion_damage(clean[0], adv[0], y)
    signal = batch.signal
    table = {"system": ctx.system, "seed": ctx.seed, "number": list(batch.numbers), "kind": kind,
             "snr_db": float(snr), "achieved_snr_db": achieved_snr_db(signal, delta), "linf": linf_int16(delta),
             "loudness_lu": relative_loudness(signal, delta, batch.lengths, ctx.sample_rate, part.lufs),
             "mae_clean": np.abs(np.asarray(clean[0], np.float64) - y).mean(axis=1),
             "mae_adv": np.abs(np.asarray(adv[0], np.float64) - y).mean(axis=1), "dmae": dmae,
             "pred_change": change, "best_step": best_step, **dict(zip(tidy_columns("true"), y.T)),
             **_prediction_columns("orig", *clean), **_prediction_columns("new", *adv)}
    return pd.DataFrame(table)


def _attack_batch(model, ctx: _Context, part: _Batch) -> tuple[list[pd.DataFrame], dict]:
    """Attack and noise rows of one batch; the perturbations kept for transfer, round trip and listening."""
    cfg, batch, y = ctx.config, part.segments, part.y
    kept_snrs = {cfg.transfer_snr_db, cfg.roundtrip_snr_db, cfg.listening_snr_db}
    clean = predict_segments(model, batch, ctx.frontend, ctx.mean, ctx.std)
    seeds = {kind: [[int(cfg.noise_seed), int(n), NOISE_KINDS.index(kind)] for n in batch.numbers]
             for kind in cfg.noise_kinds}
    noises = {kind: unit_noise(batch, kind, seeds[kind]) for kind in cfg.noise_kinds}
    rows, kept, start = [], {}, None
    for snr in sorted(cfg.snr_db, reverse=True):
        res = waveform_attack(model, batch, y, ctx.frontend, ctx.mean, ctx.std, Budget(snr_db=snr, linf=cfg.linf),
                              cfg.steps, cfg.update, cfg.step_scale, init=start)
        delta = res.delta.cpu()
        start = res.delta if cfg.warm_start else None
        rows.append(_rows(ctx, part, "attack", snr, (res.clean_emotions, res.clean_bottleneck),
                          (res.adv_emotions, res.adv_bottleneck), delta, res.best_step))
        if snr in kept_snrs:
            kept[snr] = delta
        for kind in cfg.noise_kinds:
            noise = noise_perturbation(batch, kind, snr, seeds[kind], noises[kind])
            adv = predict_segments(model, batch, ctx.frontend, ctx.mean, ctx.std, noise)
            rows.append(_rows(ctx, part, kind, snr, clean, adv, noise, np.full(len(y), -1)))
    return rows, kept


def _transfer_rows(ctx: _Context, peers: Sequence[tuple], parts: Sequence[tuple],
                   results: pd.DataFrame) -> pd.DataFrame:
    """Adversaries at ``transfer_snr_db`` fed to each peer ``(model, system, seed)``, plus the model's own rows."""
    snr = ctx.config.transfer_snr_db
    own = results[(results["kind"] == "attack") & (results["snr_db"] == float(snr))]
    rows = [pd.DataFrame({"source_system": ctx.system, "source_seed": ctx.seed, "target_system": ctx.system,
                          "target_seed": ctx.seed, "number": own["number"].to_numpy(), "snr_db": float(snr),
                          "dmae": own["dmae"].to_numpy(), "pred_change": own["pred_change"].to_numpy()})]
    for model, system, seed in peers:
        for (batch, y, _), kept in parts:
            clean, _ = predict_segments(model, batch, ctx.frontend, ctx.mean, ctx.std)
            adv, _ = predict_segments(model, batch, ctx.frontend, ctx.mean, ctx.std, kept[snr])
            dmae, change = emotion_damage(clean, adv, y)
            rows.append(pd.DataFrame({"source_system": ctx.system, "source_seed": ctx.seed, "target_system": system,
                                      "target_seed": int(seed), "number": list(batch.numbers), "snr_db": float(snr),
                                      "dmae": dmae, "pred_change": change}))
    return pd.concat(rows, ignore_index=True)


def _predict_excerpts(model, x: np.ndarray) -> np.ndarray:
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device))
    return out.emotions.float().cpu().numpy()


def _roundtrip_rows(model, ctx: _Context, prepared, audios: dict[int, ExcerptAudio], parts: Sequence[tuple],
                    attack_rows: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """The adversaries at ``roundtrip_snr_db`` through a 16-bit WAV and the data pipeline."""
    snr, frontend64, rows = ctx.config.roundtrip_snr_db, attack_frontend(ctx.features, torch.float64), []
    for (batch, y, _), kept in parts:
        adversarial = batch.signal + kept[snr]
        trips = [roundtrip_excerpt(audios[n], adversarial[i], folder / f"{n:03d}.wav", frontend64, ctx.mean, ctx.std,
                                   int(prepared.excerpt_frames)) for i, n in enumerate(batch.numbers)]
        clean = _predict_excerpts(model, prepared.excerpts(list(batch.numbers)))
        back = _predict_excerpts(model, np.concatenate([t.excerpt for t in trips]))
        dmae = emotion_damage(clean, back, y)[0]
        rows.append(pd.DataFrame({"system": ctx.system, "seed": ctx.seed, "number": list(batch.numbers),
                                  "snr_db": float(snr), "dmae_roundtrip": dmae,
                                  "peak_preserved": [t.peak_preserved for t in trips],
                                  "max_error_int16": [t.max_error for t in trips]}))
    table = pd.concat(rows, ignore_index=True)
    mine = attack_rows[(attack_rows["kind"] == "attack") & (attack_rows["snr_db"] == float(snr))]
    table["dmae_attack"] = table["number"].map(mine.set_index("number")["dmae"])
    table["survival"] = table["dmae_roundtrip"] / table["dmae_attack"]
    return table


def _listening_rows(ctx: _Context, batch: SegmentBatch, delta: torch.Tensor, folder: Path) -> pd.DataFrame:
    """Clean, adversarial and amplified perturbation WAVs of the batch's first excerpt."""
    number, n, snr = batch.numbers[0], int(batch.lengths[0]), float(ctx.config.listening_snr_db)
    clean, d = batch.signal[0, :n].double().numpy(), delta[0, :n].double().numpy()
    peak = float(np.max(np.abs(d)))
    gain = LISTENING_PEAK / peak if peak > 0 else 1.0
    gain_db = 20.0 * math.log10(gain)
    names = {"clean": f"{number:03d}_clean.wav", "adversarial": f"{number:03d}_adversarial_snr{snr:g}dB.wav",
             "perturbation": f"{number:03d}_perturbation_snr{snr:g}dB_amplified{gain_db:+.0f}dB.wav"}
    audio = {"clean": clean, "adversarial": np.clip(clean + d, -1.0, 1.0), "perturbation": d * gain}
    labels = {"clean": "clean excerpt", "adversarial": f"adversarial excerpt (SNR {snr:g} dB)",
              "perturbation": f"perturbation alone, amplified by {gain_db:.0f} dB (not what a listener hears)"}
    for role, name in names.items():
        write_wav_int16(folder / "listening" / name, audio[role], ctx.sample_rate)
    return pd.DataFrame({"system": ctx.system, "seed": ctx.seed, "number": number, "snr_db": snr,
                         "role": list(names), "file": [f"listening/{names[r]}" for r in names],
                         "gain_db": [0.0, 0.0, gain_db], "label": [labels[r] for r in names]})


def _load_peers(peers: Sequence[str], device: torch.device) -> list[tuple]:
    out = []
    for folder in peers:
        model, metrics = load_model_dir(folder, device)
        out.append((model, str(metrics["system"]), int(metrics["seed"])))
    return out


def _summary(results: pd.DataFrame, numbers: list[int], skipped: list[int], seconds: float, passes: tuple) -> dict:
    means = results.groupby(["kind", "snr_db"])["dmae"].mean()
    return {"n_excerpts": len(numbers), "numbers": numbers, "skipped_wrapped": skipped, "seconds": seconds,
            "forward_passes": passes[0], "backward_passes": passes[1], "threads": torch.get_num_threads(),
            "dmae_mean": {f"{kind}@{snr:g}dB": float(v) for (kind, snr), v in means.items()}}


def _compute(model, ctx: _Context, prepared, numbers: list[int], peers: list[tuple], listening: bool,
             out: Path) -> tuple[dict[str, pd.DataFrame], tuple[int, int]]:
    """Every table of one model's result (the listening WAVs are written into ``out``)."""
    cfg = ctx.config
    audios = {n: excerpt_audio(prepared, n, ctx.frontend) for n in numbers}
    labels = prepared.table.loc[numbers, list(EMOTIONS)].to_numpy(np.float64)
    rows, parts = [], []
    for start in range(0, len(numbers), cfg.batch_size):
        chunk = numbers[start: start + cfg.batch_size]
        batch = stack_segments([audios[n] for n in chunk], int(ctx.frontend.window.shape[-1]))
        part = _Batch(batch, labels[start: start + len(chunk)], loudness_lufs(batch.signal, batch.lengths,
                                                                             ctx.sample_rate))
        batch_rows, kept = _attack_batch(model, ctx, part)
        rows += batch_rows
        parts.append((part, kept))
    results = pd.concat(rows, ignore_index=True)
    empty = pd.DataFrame()
    transfer = _transfer_rows(ctx, peers, parts, results) if cfg.transfer_snr_db is not None else empty
    if cfg.roundtrip_snr_db is not None:
        with tempfile.TemporaryDirectory(prefix="mer-roundtrip-") as tmp:
            roundtrip = _roundtrip_rows(model, ctx, prepared, audios, parts, results, Path(tmp))
    else:
        roundtrip = empty
    listen = (_listening_rows(ctx, parts[0][0].segments, parts[0][1][cfg.listening_snr_db], out)
              if listening and cfg.listening_snr_db is not None else empty)
    n_attack = len(numbers) * len(cfg.snr_db)
    passes = (n_attack * (cfg.steps + 1 + cfg.warm_start) - len(numbers) * cfg.warm_start, n_attack * cfg.steps)
    return {"results.csv": results, "transfer.csv": transfer, "roundtrip.csv": roundtrip,
            "listening.csv": listen}, passes


def attack_waveform_model(model_dir: str | os.PathLike, prepared: PreparedData, run_dir: str | os.PathLike,
                          config: WaveformConfig | None = None, *, peers: Sequence[str | os.PathLike] = (),
                          listening: bool = False, device: str | torch.device | None = None) -> Path:
    """Waveform attacks, noise baselines, transfer, round trip and listening examples of one model.

    Returns the result folder; a finished one is reused as it is.

    Parameters
    ----------
    model_dir : path-like
        A trained model folder (:func:`mer_lib.models.stage.train_system`).
    peers : sequence of path-like
        Model folders the adversaries are transferred to (the model itself is always a target).
    listening : bool
        Write listening examples.
    """
    config = config or WaveformConfig()
    device = resolve_device(device)
    model, metrics = load_model_dir(model_dir, device)
    system, seed = str(metrics["system"]), int(metrics["seed"])
    others = _load_peers([str(p) for p in peers], device)
    numbers, skipped = select_excerpts(prepared, config.n_excerpts, config.split)
    key = _result_key(config, (system, seed, model_fingerprint(model)),
                      [(s, k, model_fingerprint(m)) for m, s, k in others], _data_key(prepared, numbers), listening)
    digest = artifacts.config_hash(key)

    def compute(out: Path) -> tuple[list[str], dict]:
        features = prepared_features(prepared)
        frontend = attack_frontend(features, FFT_DTYPES[config.fft_dtype]).to(device)
        ctx = _Context(system, seed, config, features, frontend, float(prepared.mean), float(prepared.std),
                       features.sample_rate)
        t0 = time.perf_counter()
        with deterministic_mode(device):
            tables, passes = _compute(model, ctx, prepared, numbers, others, listening, out)
        summary = {**_summary(tables["results.csv"], numbers, skipped, time.perf_counter() - t0, passes),
                   "system": system, "seed": seed, "hash": digest, "device": str(device)}
        for name, table in tables.items():
            artifacts.write_text(out / name, table.to_csv(index=False))
        wavs = sorted(p.relative_to(out).as_posix() for p in (out / "listening").glob("*.wav"))
        return [*RESULT_FILES, *wavs], summary

    return RESULTS.run(waveform_dir(run_dir, system, seed, digest),
                       artifacts.config_record(key, batch_size=config.batch_size), compute)


def prepared_features(prepared: PreparedData) -> FeatureConfig:
    """The feature configuration of prepared data, read from its cache manifest (the reference's if absent)."""
    manifest = Path(prepared.cache_dir) / "manifest.json"
    recorded = artifacts.read_json(manifest).get("frontend", {}) if manifest.exists() else {}
    names = {f.name for f in dataclasses.fields(FeatureConfig)}
    return dataclasses.replace(FeatureConfig(), excerpt_frames=int(prepared.excerpt_frames),
                               **{k: v for k, v in recorded.items() if k in names and k != "excerpt_frames"})


# --------------------------------------------------------------------------
# Many models, as jobs
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class WaveformJob:
    """One model folder to attack in the audio domain; see :func:`mer_lib.jobs.run_jobs`."""

    model_dir: str
    peers: tuple[str, ...]
    prepared: object
    run_dir: str
    config: WaveformConfig
    listening: bool
    device: str | None


def _waveform_job(job: WaveformJob) -> str:
    return str(attack_waveform_model(job.model_dir, job.prepared, job.run_dir, job.config, peers=job.peers,
                                     listening=job.listening, device=job.device))


class WaveformTables(NamedTuple):
    """The stacked tables of many waveform results, each with ``result_dir`` where it has rows.

    ``results`` (``results.csv``): ``system, seed, number, kind, snr_db, achieved_snr_db, linf, loudness_lu,
    mae_clean, mae_adv, dmae, pred_change, best_step``, ``true_*, orig_*, new_*`` and, for bottleneck models,
    ``orig_bottleneck_*, new_bottleneck_*``. ``transfer``: ``source_system, source_seed, target_system, target_seed,
    number, snr_db, dmae, pred_change``. ``roundtrip``: ``system, seed, number, snr_db, dmae_roundtrip,
    peak_preserved, max_error_int16, dmae_attack, survival``. ``listening``: ``system, seed, number, snr_db, role,
    file, gain_db, label`` (``file``: absolute path).
    """

    results: pd.DataFrame
    transfer: pd.DataFrame
    roundtrip: pd.DataFrame
    listening: pd.DataFrame


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def read_waveform_tables(folders: Sequence[str | os.PathLike]) -> WaveformTables:
    """Read and stack the tables of finished result folders (:class:`MerError` for one that is not intact)."""
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in RESULT_FILES}
    for folder in folders:
        folder = Path(folder)
        RESULTS.check(folder, f"delete {folder} and rerun to recompute the waveform attack")
        for name in RESULT_FILES:
            table = _read_csv(folder / name)
            if name == "listening.csv" and not table.empty:
                table["file"] = [str(folder / f) for f in table["file"]]
            parts[name].append(table.assign(result_dir=str(folder)) if not table.empty else table)
    stacked = [pd.concat(parts[name], ignore_index=True) if parts[name] else pd.DataFrame() for name in RESULT_FILES]
    return WaveformTables(*stacked)


def _identify(folder: str) -> tuple[str, int, str]:
    model, metrics = load_model_dir(folder, "cpu")
    return str(metrics["system"]), int(metrics["seed"]), model_fingerprint(model)


def _plan(items: list[str], prepared, run_dir, config: WaveformConfig) -> tuple[list[Path], list[tuple]]:
    """Result folder of every model and, per model, ``(peers, listening)``."""
    ids = [_identify(item) for item in items]
    if len({(s, k) for s, k, _ in ids}) != len(ids):
        raise MerError("waveform_many: a (system, seed) appears more than once among the model folders")
    first_seed = {s: min(k for t, k, _ in ids if t == s) for s, _, _ in ids}
    data = _data_key(prepared, select_excerpts(prepared, config.n_excerpts, config.split)[0])
    dirs, plans = [], []
    for j, (system, seed, sha) in enumerate(ids):
        peers = [i for i, (s, k, _) in enumerate(ids) if k == seed and i != j]
        listening = seed == first_seed[system]
        key = _result_key(config, ids[j], [ids[i] for i in peers], data, listening)
        dirs.append(waveform_dir(run_dir, system, seed, artifacts.config_hash(key)))
        plans.append((tuple(items[i] for i in peers), listening))
    return dirs, plans


def waveform_many(model_dirs: Mapping[tuple[str, int], str | os.PathLike] | Sequence[str | os.PathLike],
                  prepared: PreparedData, run_dir: str | os.PathLike, config: WaveformConfig | None = None, *,
                  executor: Executor | str | int | None = None, device: str | torch.device | None = None,
                  progress: bool = True) -> WaveformTables:
    """Waveform attacks of many models as independent jobs, read back as :class:`WaveformTables`; finished ones reused.

    Parameters
    ----------
    model_dirs : dict or sequence
        Trained model folders. A model's transfer targets are the other systems' models of its seed; listening examples
        come from every system's first seed.
    executor : str or int, optional
        How the jobs run (:func:`mer_lib.jobs.run_jobs`: an executor name or object, a worker count; ``0``: here).
    """
    config = config or WaveformConfig()
    items = [str(p) for p in (model_dirs.values() if isinstance(model_dirs, Mapping) else model_dirs)]
    if not items:
        raise MerError("waveform_many: no models to attack")
    dirs, plans = _plan(items, prepared, run_dir, config)
    todo = [j for j, out in enumerate(dirs) if not RESULTS.is_finished(out)]
    device = None if device is None else str(device)
    jobs = [WaveformJob(items[j], plans[j][0], prepared, str(run_dir), config, plans[j][1], device) for j in todo]
    done = run_jobs(_waveform_job, jobs, executor, names=[f"waveform attack of {items[j]}" for j in todo],
                    desc="waveform attacks", progress=progress, device=device)
    for j, out in zip(todo, done):
        dirs[j] = Path(out)
    return read_waveform_tables(dirs)


# --------------------------------------------------------------------------
# Settings per profile; what a listener hears, as spectrograms
# --------------------------------------------------------------------------
#: The waveform-attack settings of the full-size profiles: every test excerpt, five SNRs (60 dB is the
#: quietest perturbation), 20 steps per SNR. The scaled-down profiles use :class:`WaveformConfig`'s defaults.
FULL_SIZE_WAVEFORM = WaveformConfig(snr_db=(60.0, 50.0, 40.0, 30.0, 20.0), steps=20, n_excerpts=None)


def waveform_config(profile: Profile) -> WaveformConfig:
    """The waveform-attack settings of a run profile.

    Full-size profiles (``paper``, ``paper-synthetic``: the paper's width and epochs) get :data:`FULL_SIZE_WAVEFORM`;
    ``quick`` and ``smoke`` the defaults of :class:`WaveformConfig`.
    """
    full = profile.train.width >= 1.0 and profile.train.max_epochs >= 100
    return FULL_SIZE_WAVEFORM if full else WaveformConfig()


def listening_spectrograms(listening: pd.DataFrame, prepared: PreparedData,
                           system: str) -> tuple[np.ndarray, np.ndarray]:
    """The standardised ``(frames, bands)`` spectrograms of one system's clean and adversarial listening files.

    Each WAV file is read as the data stage reads audio and standardised with the run's statistics, so what is shown is
    what the written audio gives the model, framed from the start of the 10-s segment. Raises ``MerError`` if the
    table has no clean and adversarial file of ``system``, or a file is missing.
    """
    rows = listening[listening["system"] == system].set_index("role")
    if not {"clean", "adversarial"} <= set(rows.index):
        raise MerError(f"listening table: no clean and adversarial file of {system}; systems present: "
                       f"{sorted(listening['system'].unique())}")
    frontend = attack_frontend(prepared_features(prepared), torch.float64)  # the data stage's precision
    specs = [(spectrogram_from_file(rows.loc[role, "file"], frontend) - prepared.mean) / prepared.std
             for role in ("clean", "adversarial")]
    return specs[0], specs[1]
