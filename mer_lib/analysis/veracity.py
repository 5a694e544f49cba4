"""The veracity stage of notebook 11: attack chosen test excerpts, explain the attacked predictions, re-insert.

Per trained model, :func:`explain_model` attacks a fixed selection of test excerpts in paper mode, explains each
attacked excerpt's error with the methods of :class:`ExplainConfig` over the segment grid
(:mod:`mer_lib.analysis.explanations`), and measures the recovery of the damage when the perturbation is put back
only inside the top-k segments of every ranking: each method's, the oracle's (most perturbation energy) and random
ones. For a bottleneck model it also records its built-in explanation: how far every unit moved (rating points,
and in units of the unit's clean spread over the test split) and a ranking of the segments that moved the unit
which changed the error most. Results are cached per model (``<run>/explanations/<system>/seed<k>-<hash>/``).
Protocol §11.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mer_lib import artifacts
from mer_lib.analysis import explanations as ex
from mer_lib.analysis.stats import t_interval, verdict, welch_interval
from mer_lib.attacks.engine import ATTACK_VERSION, run_attack
from mer_lib.attacks.stage import AttackSetting, model_fingerprint
from mer_lib.attacks.waveform import (
    Budget,
    attack_frontend,
    excerpt_audio,
    segment_excerpt,
    stack_segments,
    waveform_attack,
)
from mer_lib.attacks.waveform_stage import (
    FFT_DTYPES,
    WAVEFORM_VERSION,
    WaveformConfig,
    prepared_features,
    select_excerpts,
)
from mer_lib.config import EMOTIONS, TARGET_SCALE, AttackConfig, Profile, RunLayout
from mer_lib.errors import MerError
from mer_lib.jobs import Executor, run_jobs
from mer_lib.models.stage import load_model_dir
from mer_lib.models.train import deterministic_mode, predict, resolve_device

__all__ = ["ExplainConfig", "FULL_SIZE_EXPLAIN", "EXPLAIN_VERSION", "UNITS", "explain_config", "chosen_excerpts",
           "ExplainJob", "explain_model", "explain_models", "read_results", "read_scores", "per_model_recovery",
           "recovery_summary", "ranking_contrasts", "cross_contrast"]

#: Bumped whenever a code change alters the stage's results; part of every result's hash.
EXPLAIN_VERSION = 2
#: Files of a finished result (``summary.json`` is written last and marks it).
RESULT_FILES = ("recovery.csv", "units.csv", "stability.csv", "scores.npy", "adversarial.npy")
RESULTS = artifacts.CachedStage("summary.json", RESULT_FILES, "recomputing the explanations")
#: The ranking of a bottleneck model's own explanation (segments that moved its most consequential unit).
UNITS = "units (lime)"


@dataclasses.dataclass(frozen=True)
class ExplainConfig:
    """Settings of the explanation stage, fixed before any result was seen; defaults: the quick profile's.

    Attributes
    ----------
    grid : (int, int)
        Segments in time and in frequency (Praher et al. 2021: 5 x 4).
    methods : tuple of str
        Attribution methods (:data:`mer_lib.analysis.explanations.METHODS`).
    n_samples, ig_steps : int
        Perturbed samples per excerpt of LIME and Kernel SHAP (Praher et al.: 8,192); integration steps of IG.
    n_excerpts : int
        Test excerpts per model, evenly spaced over the split order (:func:`chosen_excerpts`).
    ks : tuple of int
        Numbers of top segments the perturbation is put back into.
    n_random : int
        Random draws of k segments per excerpt (their recoveries are averaged).
    baseline : float
        The value of a switched-off segment (0: the training mean of every bin of the standardised input).
    seed, stability_seed : int
        Sampling seeds of the explanations and of the second LIME run that checks their stability.
    waveform_snr_db : float or None
        SNR (dB) of the waveform attack whose spectrogram-domain effect is explained as well (30: the SNR of
        notebook 09's transfer, round-trip and listening checks); ``None`` skips it.
    """

    grid: tuple[int, int] = ex.GRID
    methods: tuple[str, ...] = ("lime", "integrated_gradients")
    n_samples: int = 128
    ig_steps: int = 16
    n_excerpts: int = 4
    ks: tuple[int, ...] = (1, 3, 5)
    n_random: int = 10
    baseline: float = 0.0
    seed: int = 0
    stability_seed: int = 1
    waveform_snr_db: float | None = 30.0

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in ex.METHODS]
        if unknown or not self.methods:
            raise MerError(f"ExplainConfig.methods: expected some of {ex.METHODS}, got {self.methods}")
        for name in ("n_samples", "ig_steps", "n_excerpts", "n_random"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise MerError(f"ExplainConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.waveform_snr_db is not None:
            Budget(snr_db=self.waveform_snr_db)
        if not self.ks or any(not 1 <= k <= self.grid[0] * self.grid[1] for k in self.ks):
            raise MerError(f"ExplainConfig.ks must lie in 1..{self.grid[0] * self.grid[1]}, got {self.ks}")


#: The paper's settings (full-size profiles): all three methods, 8,192 samples, more excerpts.
FULL_SIZE_EXPLAIN = ExplainConfig(methods=ex.METHODS, n_samples=8192, ig_steps=64, n_excerpts=24)


def explain_config(profile: Profile) -> ExplainConfig:
    """:data:`FULL_SIZE_EXPLAIN` for the full-size profiles (the paper's width and epochs), else the defaults."""
    full = profile.train.width >= 1.0 and profile.train.max_epochs >= 100
    return FULL_SIZE_EXPLAIN if full else ExplainConfig()


def chosen_excerpts(numbers: np.ndarray, n: int) -> np.ndarray:
    """``n`` excerpts evenly spaced over ``numbers`` (split order), the first and last included."""
    numbers = np.asarray(numbers)
    if n > len(numbers):
        raise MerError(f"chosen_excerpts: {n} excerpts asked for, the split has {len(numbers)}")
    return numbers[np.unique(np.linspace(0, len(numbers) - 1, n).round().astype(int))]


def _errors(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(predict(model, x)[0].astype(np.float64) - y).mean(axis=1)


def _unit_target(model, b_clean: np.ndarray, b_adv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per excerpt the unit whose move changed the emotions most (|move| x its weights' L1 norm), and +-1 on it."""
    weight = model.emotion.weight.detach().double().cpu().numpy()  # (8, 7)
    move = b_adv.astype(np.float64) - b_clean
    unit = np.argmax(np.abs(move) * np.abs(weight).sum(axis=0), axis=1)
    target = np.zeros_like(move)
    target[np.arange(len(move)), unit] = np.sign(move[np.arange(len(move)), unit])
    return unit, target


def _recoveries(model, x: np.ndarray, adv: np.ndarray, y: np.ndarray, numbers: np.ndarray, mask: np.ndarray,
                scores: Mapping[str, np.ndarray], config: ExplainConfig) -> pd.DataFrame:
    """Recovery per excerpt, ranking and k (random: the mean over ``config.n_random`` draws), with the damage."""
    e_clean, e_adv = _errors(model, x, y), _errors(model, adv, y)
    rows = []
    for k in config.ks:
        for name, s in scores.items():
            rec = ex.recovery(e_clean, e_adv, _errors(model, ex.reinsert(x, adv, mask, ex.top_k(s, k)), y))
            rows += [{"number": n, "ranking": name, "k": k, "recovery": r} for n, r in zip(numbers, rec)]
        draws = [ex.recovery(e_clean, e_adv, _errors(model, ex.reinsert(
            x, adv, mask, ex.random_segments(len(x), mask.max() + 1, k, config.seed * 7919 + k * 101 + d)), y))
            for d in range(config.n_random)]
        rows += [{"number": n, "ranking": "random", "k": k, "recovery": r}
                 for n, r in zip(numbers, np.mean(draws, axis=0))]
    return pd.DataFrame(rows).assign(damage=lambda t: t["number"].map(dict(zip(numbers, e_adv - e_clean))))


def _unit_moves(numbers: np.ndarray, b_clean: np.ndarray, b_adv: np.ndarray, spread: np.ndarray,
                unit: np.ndarray) -> pd.DataFrame:
    """Per excerpt and unit: the attack's move in rating points and in clean spreads; the most consequential unit."""
    move = b_adv.astype(np.float64) - b_clean
    n_units = move.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):  # a unit constant over the test split: NaN
        in_spread = np.where(spread > 0, move / spread, np.nan)
    return pd.DataFrame({"number": np.repeat(numbers, n_units), "unit": np.tile(np.arange(n_units), len(numbers)),
                         "move_points": TARGET_SCALE * move.ravel(), "move_in_spread": in_spread.ravel(),
                         "most_consequential": (np.arange(n_units)[None] == unit[:, None]).ravel()})


def _explain_attacked(model, x: np.ndarray, adv: np.ndarray, y: np.ndarray, numbers: np.ndarray,
                      spread: np.ndarray | None, config: ExplainConfig, stability: bool) -> dict:
    """Scores, recoveries, unit moves (bottleneck models) and LIME's stability for clean and attacked inputs."""
    mask = ex.segment_mask(x.shape[2:], config.grid)
    explain = lambda score, targets, method, seed: ex.explain(  # noqa: E731
        score, adv, targets, mask, method, config.ig_steps if method == "integrated_gradients" else config.n_samples,
        seed, config.baseline)
    scores = {"oracle": ex.segment_energy(adv - x, mask)}
    for method in config.methods:
        scores[method] = explain(ex.error_score(model), y, method, config.seed)
    out = {"units": pd.DataFrame(), "stability": pd.DataFrame()}
    if stability:
        lime = scores["lime"] if "lime" in scores else explain(ex.error_score(model), y, "lime", config.seed)
        again = explain(ex.error_score(model), y, "lime", config.stability_seed)
        out["stability"] = pd.DataFrame({"number": numbers, **{f"top{k}_overlap": ex.top_overlap(lime, again, k)
                                                                for k in config.ks}})
    if model.bottleneck is not None:
        b_clean, b_adv = predict(model, x)[1], predict(model, adv)[1]
        unit, target = _unit_target(model, b_clean, b_adv)
        scores[UNITS] = explain(ex.direction_score(model), target, "lime", config.seed)
        out["units"] = _unit_moves(numbers, b_clean, b_adv, spread, unit)
    out["recovery"] = _recoveries(model, x, adv, y, numbers, mask, scores, config)
    out["scores"] = scores
    return out


def _waveform_inputs(model, prepared, numbers: np.ndarray, y: np.ndarray, snr_db: float,
                     waveform: WaveformConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The waveform attack at ``snr_db`` on those ``numbers`` whose file covers the excerpt: their numbers, and the
    clean and adversarial model inputs the front end makes of the audio."""
    usable = set(select_excerpts(prepared)[0])
    keep = np.array([int(n) in usable for n in numbers])
    device = next(model.parameters()).device
    frontend = attack_frontend(prepared_features(prepared), FFT_DTYPES[waveform.fft_dtype]).to(device)
    batch = stack_segments([excerpt_audio(prepared, int(n), frontend) for n in numbers[keep]])
    result = waveform_attack(model, batch, y[keep], frontend, prepared.mean, prepared.std, Budget(snr_db=snr_db),
                             waveform.steps, waveform.update, waveform.step_scale)
    signal, starts = batch.signal.to(device), batch.starts.to(device)
    with torch.no_grad():
        x, adv = (segment_excerpt(signal + d, starts, frontend, prepared.mean, prepared.std).cpu().numpy()
                  for d in (0.0, result.delta.to(device)))
    return numbers[keep], x.astype(np.float32), adv.astype(np.float32)


def explain_model(model_dir: str | os.PathLike, prepared, run_dir: str | os.PathLike, attack: AttackConfig,
                  config: ExplainConfig, device: str | torch.device | None = None,
                  waveform: WaveformConfig | None = None) -> Path:
    """Attack, explain and re-insert for one trained model (module docstring); the result folder, reused if done.

    ``waveform``: the steps, update and FFT precision of the waveform attack (default: :class:`WaveformConfig`'s).
    """
    device = resolve_device(device)
    waveform = waveform or WaveformConfig()
    model, metrics = load_model_dir(model_dir, device)
    system, seed = metrics["system"], int(metrics["seed"])
    test = prepared.numbers("test")
    numbers = chosen_excerpts(test, config.n_excerpts)
    x = prepared.excerpts(numbers)
    y = prepared.table.loc[numbers, list(EMOTIONS)].to_numpy(np.float64)
    key = {"explain_version": EXPLAIN_VERSION, "attack_version": ATTACK_VERSION,
           "explain": dataclasses.asdict(config), "attack": AttackSetting.of("paper").settings(attack),
           "model_sha256": model_fingerprint(model), "system": system, "seed": seed,
           "numbers": numbers.tolist(), "x_sha256": artifacts.array_sha256(x)}
    if config.waveform_snr_db is not None:
        key.update(waveform_version=WAVEFORM_VERSION, waveform={
            name: getattr(waveform, name) for name in ("steps", "update", "step_scale", "fft_dtype")})
    digest = artifacts.config_hash(key)
    out = RunLayout(run_dir).explanations / system / f"seed{seed}-{digest}"

    def compute(out: Path) -> tuple[list[str], dict]:
        with deterministic_mode(device):
            result = run_attack(model, x, y.astype(np.float32), "paper", attack, None, mean=prepared.mean,
                                std=prepared.std, progress=False)
        adv = (x + result.delta).astype(np.float32)
        spread = (predict(model, prepared.excerpts(test))[1].astype(np.float64).std(axis=0)
                  if model.bottleneck is not None else None)
        parts = {"spectrogram": _explain_attacked(model, x, adv, y, numbers, spread, config, stability=True)}
        if config.waveform_snr_db is not None:
            with deterministic_mode(device):
                kept, xw, advw = _waveform_inputs(model, prepared, numbers, y, config.waveform_snr_db, waveform)
            yw = y[np.isin(numbers, kept)]
            parts["waveform"] = _explain_attacked(model, xw, advw, yw, kept, spread, config, stability=False)
        for name in ("recovery", "units", "stability"):
            table = pd.concat([part[name].assign(attack=a) for a, part in parts.items() if not part[name].empty]
                              or [pd.DataFrame()], ignore_index=True)
            artifacts.write_text(out / f"{name}.csv", table.assign(system=system, seed=seed).to_csv(index=False))
        scores = parts["spectrogram"]["scores"]
        artifacts.write_npy(out / "scores.npy", np.stack(list(scores.values())))
        artifacts.write_npy(out / "adversarial.npy", adv)
        return list(RESULT_FILES), {"system": system, "seed": seed, "rankings": list(scores), "hash": digest,
                                    "numbers": numbers.tolist(), "attacks": list(parts)}

    return RESULTS.run(out, artifacts.config_record(key), compute)


@dataclasses.dataclass(frozen=True)
class ExplainJob:
    """One trained model folder to attack, explain and re-insert; see :func:`mer_lib.jobs.run_jobs`."""

    model_dir: str
    prepared: object
    run_dir: str
    attack: AttackConfig
    config: ExplainConfig
    device: str | None
    waveform: WaveformConfig | None


def _explain_job(job: ExplainJob) -> str:
    return str(explain_model(job.model_dir, job.prepared, job.run_dir, job.attack, job.config, job.device,
                             job.waveform))


def explain_models(models: Mapping[tuple[str, int], str | os.PathLike], prepared, run_dir: str | os.PathLike,
                   attack: AttackConfig, config: ExplainConfig, device=None, waveform: WaveformConfig | None = None,
                   executor: Executor | str | int | None = None,
                   progress: bool = False) -> dict[tuple[str, int], Path]:
    """:func:`explain_model` for every model of ``{(system, seed): folder}``, as independent jobs.

    ``executor``: as for :func:`mer_lib.jobs.run_jobs` (default ``$MER_EXECUTOR`` or ``"auto"``: one worker process
    per CPU core, one thread each; a finished result is reused whichever executor made it).
    """
    device = None if device is None else str(device)
    jobs = [ExplainJob(str(folder), prepared, str(run_dir), attack, config, device, waveform)
            for folder in models.values()]
    names = [f"explanations of {system} seed {seed}" for system, seed in models]
    done = run_jobs(_explain_job, jobs, executor, names=names, desc="explanations", progress=progress,
                    device=device)
    return {key: Path(out) for key, out in zip(models, done)}


def read_scores(folder: str | os.PathLike) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """One model's ``numbers``, ranking names, segment scores ``(rankings, N, S)`` and adversarial inputs."""
    folder = RESULTS.check(folder, "rerun the stage")
    summary = artifacts.read_json(folder / "summary.json")
    return (np.asarray(summary["numbers"]), list(summary["rankings"]), artifacts.read_npy(folder / "scores.npy"),
            artifacts.read_npy(folder / "adversarial.npy"))


def read_results(folders: Mapping[tuple[str, int], Path], name: str) -> pd.DataFrame:
    """One result table (``"recovery"``, ``"units"``, ``"stability"``) of every model, stacked."""
    return pd.concat([pd.read_csv(RESULTS.check(f, "rerun the stage") / f"{name}.csv") for f in folders.values()],
                     ignore_index=True)


def per_model_recovery(recovery: pd.DataFrame) -> pd.DataFrame:
    """Per attack, system, seed, ranking and k: the share of the model's damage, summed over its excerpts, that the
    chosen segments re-create (the damage-weighted mean of the excerpts' recoveries; excerpts without damage drop).

    A plain mean would let an excerpt with a small damage dominate: its recovery is a ratio with a small
    denominator (on another CPU one excerpt with damage 0.017 had a recovery of -3.4).
    """
    kept = recovery.dropna(subset=["recovery"])
    kept = kept.assign(weighted=kept["recovery"] * kept["damage"])
    sums = kept.groupby(["attack", "system", "seed", "ranking", "k"], sort=False)[["weighted", "damage"]].sum()
    return (sums["weighted"] / sums["damage"]).rename("recovery").reset_index()


def recovery_summary(recovery: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per attack, system, ranking and k: mean over models of the per-model mean recovery, t-interval over models."""
    rows = []
    keys = ["attack", "system", "ranking", "k"]
    for values, g in per_model_recovery(recovery).groupby(keys, sort=False):
        low, high = t_interval(g["recovery"].to_numpy(np.float64), level)
        rows.append({**dict(zip(keys, values)), "n_models": len(g), "recovery": float(g["recovery"].mean()),
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def _row(keys: dict, d_or_pair, direction: int, level: float, **extra) -> dict:
    """A contrast row: paired differences ``d`` (t-interval) or two samples ``(a, b)`` (Welch interval)."""
    if isinstance(d_or_pair, tuple):
        va, vb = d_or_pair
        low, high, _ = welch_interval(va, vb, level)
        estimate = float(va.mean() - vb.mean()) if len(va) and len(vb) else np.nan
    else:
        low, high = t_interval(d_or_pair, level)
        estimate = float(d_or_pair.mean()) if len(d_or_pair) else np.nan
    return {**keys, **extra, "estimate": estimate, "ci_low": low, "ci_high": high,
            "verdict": verdict(low, high, direction, estimate)}


def ranking_contrasts(recovery: pd.DataFrame, a: str, b: str, direction: int = 1, level: float = 0.95) -> pd.DataFrame:
    """Per attack, system and k: recovery of ranking ``a`` minus ranking ``b``, paired by model, t-interval.

    ``verdict`` of the predicted sign ``direction`` (e.g. an explanation beats random segments: ``+1``).
    """
    pm = per_model_recovery(recovery).pivot_table("recovery", ["attack", "system", "seed", "k"], "ranking",
                                                  sort=False)
    if a not in pm.columns or b not in pm.columns:
        raise MerError(f"ranking_contrasts: rankings {a!r} and {b!r} needed; have {list(pm.columns)}")
    rows = []
    for (attack, system, k), g in pm.groupby(level=["attack", "system", "k"], sort=False):
        d = (g[a] - g[b]).dropna().to_numpy(np.float64)
        rows.append(_row({"attack": attack, "system": system, "k": k, "a": a, "b": b}, d, direction, level,
                         n_models=len(d)))
    return pd.DataFrame(rows)


def cross_contrast(recovery: pd.DataFrame, a: tuple[str, str], b: tuple[str, str], direction: int = 1,
                   level: float = 0.95) -> pd.DataFrame:
    """Per attack and k: recovery of ``a`` = (system, ranking) minus ``b``, models of two systems, Welch interval.

    E.g. A2M2E's own explanation (:data:`UNITS`) against LIME of A2E; ``verdict`` of the sign ``direction``.
    """
    pm = per_model_recovery(recovery)
    rows = []
    for (attack, k), g in pm.groupby(["attack", "k"], sort=False):
        va, vb = (g[(g["system"] == s) & (g["ranking"] == r)]["recovery"].to_numpy(np.float64) for s, r in (a, b))
        if not len(va) or not len(vb):
            raise MerError(f"cross_contrast: no recoveries of {a if not len(va) else b} at k={k} ({attack})")
        rows.append(_row({"attack": attack, "k": k, "a": " / ".join(a), "b": " / ".join(b)}, (va, vb), direction,
                         level, n_a=len(va), n_b=len(vb)))
    return pd.DataFrame(rows)
