"""Who uses the cue of the mechanism world, and what an attack exploits (notebook 10, protocol §2.3).

:func:`cue_band_mask` marks the spectrogram bands of the cue; :func:`band_energy_share` is the share of a
perturbation's energy in them (against :func:`band_area_share`, their share of the spectrogram); :func:`probe_r`
is the cross-validated r of a linear probe, e.g. of the cue level on a model's embedding. The ablations feed the
models the same test excerpts with the cue removed or at one level for all (:func:`ablation_table`).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mer_lib import artifacts
from mer_lib.analysis.stats import t_interval, verdict
from mer_lib.config import EMOTIONS, FeatureConfig
from mer_lib.data.cache import PreparedData, cut_excerpt, make_frontend
from mer_lib.data.frontend import fft_bin_frequencies, log_filterbank, madmom_normalize, read_audio_int16
from mer_lib.data.synth.cue import CueConfig, add_cue, cue_samples
from mer_lib.errors import MerError
from mer_lib.metrics import pearson_per_column
from mer_lib.models.refit import backbone_features, head_inputs, least_squares_layer
from mer_lib.models.stage import load_model_dir
from mer_lib.models.train import predict, resolve_device


def band_centres(features: FeatureConfig | None = None) -> np.ndarray:
    """Weighted centre frequency (Hz) of every band of the front end of ``features`` (default: the reference's)."""
    f = features or FeatureConfig()
    fb = log_filterbank(f.sample_rate, f.frame_size, f.bands_per_octave, f.fmin, f.fmax, f.fref).astype(np.float64)
    return fft_bin_frequencies(f.frame_size, f.sample_rate) @ fb / fb.sum(axis=0)


def cue_band_mask(band_hz: tuple[float, float], features: FeatureConfig | None = None) -> np.ndarray:
    """Which spectrogram bands carry the cue: those whose centre lies in ``band_hz`` (:class:`MerError` if none)."""
    centres = band_centres(features)
    mask = (centres >= band_hz[0]) & (centres <= band_hz[1])
    if not mask.any():
        raise MerError(f"cue_band_mask: no band of the front end has its centre in {band_hz} Hz")
    return mask


def band_area_share(mask: np.ndarray) -> float:
    """The share of the spectrogram that the masked bands cover: what a perturbation spread evenly puts there."""
    return float(np.mean(np.asarray(mask, bool)))


def band_energy_share(delta: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Share of each perturbation's energy (sum of squares) in the masked bands (last axis); NaN for a zero one.

    ``delta`` is ``(N, ..., bands)``, e.g. spectrogram perturbations ``(N, 1, T, F)``.
    """
    d = np.asarray(delta, np.float64)
    mask = np.asarray(mask, bool)
    if d.ndim < 2 or d.shape[-1] != mask.shape[0]:
        raise MerError(f"band_energy_share: perturbations (N, ..., {mask.shape[0]}) expected, got {d.shape}")
    energy = (d ** 2).reshape(len(d), -1, d.shape[-1]).sum(axis=1)
    total = energy.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, energy[:, mask].sum(axis=1) / total, np.nan)


def probe_r(features: np.ndarray, target: np.ndarray, n_folds: int = 5, ridge: float = 0.01, seed: int = 0) -> float:
    """Cross-validated r of a ridge probe from ``features`` ``(N, D)`` to ``target`` ``(N,)``.

    Folds are a seeded random assignment; the ridge is relative (:func:`mer_lib.models.refit.least_squares_layer`).
    The r of the out-of-fold predictions with the target; NaN if the predictions are constant.
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(target, np.float64).reshape(-1, 1)
    if x.ndim != 2 or len(x) != len(y):
        raise MerError(f"probe_r: features (N, D) and target (N,) expected, got {x.shape} and {y.shape[:1]}")
    if len(x) < 2 * n_folds:
        raise MerError(f"probe_r: need at least {2 * n_folds} rows for {n_folds} folds, got {len(x)}")
    folds = np.random.default_rng(seed).permutation(np.arange(len(x)) % n_folds)
    out = np.empty_like(y)
    for fold in range(n_folds):
        test = folds == fold
        weight, bias = least_squares_layer(x[~test], y[~test], ridge)
        out[test] = x[test] @ weight.T + bias
    return float(pearson_per_column(y, out)[0])


# --------------------------------------------------------------------------- ablations of the cue
def _same_excerpts(world: PreparedData, plain: PreparedData, numbers: Sequence[int]) -> None:
    cols = ["offset", "frames"]
    if not world.table.loc[list(numbers), cols].equals(plain.table.loc[list(numbers), cols]):
        raise MerError("the cue world's excerpts do not start where the plain world's do (offsets or frames differ)")


def excerpts_without_cue(world: PreparedData, plain: PreparedData, numbers: Sequence[int]) -> np.ndarray:
    """The excerpts of ``numbers`` with the cue removed, standardised as in the cue world (model inputs).

    Removing the cue gives back the plain world's audio bit for bit (:func:`mer_lib.data.synth.cue.remove_cue`), so
    its cached spectrograms are the cue-free ones.
    """
    _same_excerpts(world, plain, numbers)
    return ((plain.excerpts(list(numbers), standardize=False) - world.mean) / world.std).astype(np.float32)


def excerpts_with_cue_at(world: PreparedData, plain: PreparedData, numbers: Sequence[int], config: CueConfig,
                         level_db: float, features: FeatureConfig) -> np.ndarray:
    """The excerpts of ``numbers`` with the cue at one level for all (``level_db`` below the music: uninformative)."""
    _same_excerpts(world, plain, numbers)
    frontend = make_frontend(features)
    out = []
    for n in numbers:
        music = read_audio_int16(plain.table.at[n, "audio_path"], features.sample_rate)
        rms = math.sqrt(float(np.mean(music.astype(np.float64) ** 2))) * 10.0 ** (level_db / 20.0)
        audio = add_cue(music, cue_samples(int(n), len(music), features.sample_rate, rms, config))
        with torch.no_grad():
            spec = frontend(torch.from_numpy(madmom_normalize(audio))).numpy().astype(np.float32)
        out.append(cut_excerpt(spec, int(world.table.at[n, "offset"]), world.excerpt_frames))
    return ((np.stack(out)[:, None] - world.mean) / world.std).astype(np.float32)


def ablation_table(models: Mapping[tuple[str, int], str | os.PathLike], inputs: Mapping[str, np.ndarray],
                   y_true: np.ndarray, emotion: str, device: str | None = None) -> pd.DataFrame:
    """Every model on every version of the same test excerpts (``inputs``: condition -> model inputs).

    One row per (system, seed, condition): ``r_emotion`` (r of the cue's emotion), ``mean_r`` (over the emotions),
    and ``change``, the mean absolute change of the predictions from the first condition's.
    """
    j = list(EMOTIONS).index(emotion)
    rows = []
    for (system, seed), folder in models.items():
        model, _ = load_model_dir(folder, resolve_device(device))
        base = None
        for condition, x in inputs.items():
            pred = predict(model, x)[0].astype(np.float64)
            base = pred if base is None else base
            r = pearson_per_column(np.asarray(y_true, np.float64), pred)
            rows.append({"system": system, "seed": int(seed), "condition": condition, "r_emotion": float(r[j]),
                         "mean_r": float(np.nanmean(r)), "change": float(np.abs(pred - base).mean())})
    return pd.DataFrame(rows)


def paired_change(table: pd.DataFrame, value: str, reference: str, by: Sequence[str] = ("system", "condition"),
                  direction: int = -1, level: float = 0.95) -> pd.DataFrame:
    """Per ``by`` group, the mean over models (seeds) of ``value`` minus its value in the ``reference`` condition.

    t-interval over the models; ``verdict`` of the predicted sign ``direction`` (-1: the change lowers ``value``).
    """
    ref = table[table["condition"] == reference].set_index(["system", "seed"])[value]
    rows = []
    for keys, g in table[table["condition"] != reference].groupby(list(by), sort=False):
        diff = g.set_index(["system", "seed"])[value] - ref.reindex(g.set_index(["system", "seed"]).index)
        d = diff.to_numpy(np.float64)
        low, high = t_interval(d, level)
        estimate = float(np.mean(d))
        rows.append({**dict(zip(by, keys if isinstance(keys, tuple) else (keys,))), "n_models": len(d),
                     "estimate": estimate, "ci_low": low, "ci_high": high,
                     "verdict": verdict(low, high, direction, estimate)})
    return pd.DataFrame(rows)


def probe_table(models: Mapping[tuple[str, int], str | os.PathLike], x: np.ndarray, target: np.ndarray,
                device: str | None = None) -> pd.DataFrame:
    """Cross-validated r of a linear probe of ``target`` (e.g. the cue level) on each model's representations.

    One row per (system, seed, representation): ``embedding`` (the pooled backbone features) for every model, and
    ``units`` (the bottleneck) for bottleneck models.
    """
    rows = []
    for (system, seed), folder in models.items():
        model, _ = load_model_dir(folder, resolve_device(device))
        reps = {"embedding": backbone_features(model, x)}
        if model.bottleneck is not None:
            reps["units"] = head_inputs(model, x)
        rows += [{"system": system, "seed": int(seed), "representation": name, "r": probe_r(f, target)}
                 for name, f in reps.items()]
    return pd.DataFrame(rows)


def energy_share_table(attack_rows: pd.DataFrame, x: np.ndarray, mask: np.ndarray) -> pd.DataFrame:
    """Per attacked model, the mean share of its perturbations' energy in the masked (cue) bands.

    ``attack_rows``: :func:`mer_lib.attacks.stage.attack_models` rows of attacks run with ``save_adversarial``;
    ``x``: the clean inputs in the attacks' order. Adds ``area_share`` and ``ratio`` (share over area share).
    """
    rows = []
    for (system, seed, folder), g in attack_rows.groupby(["system", "seed", "result_dir"], sort=False):
        adversarial = artifacts.read_npy(Path(folder) / "adversarial.npy")
        share = band_energy_share(adversarial - x, mask)
        rows.append({"system": system, "seed": int(seed), "energy_share": float(np.nanmean(share))})
    out = pd.DataFrame(rows)
    area = band_area_share(mask)
    return out.assign(area_share=area, ratio=out["energy_share"] / area)


def over_models(table: pd.DataFrame, value: str, by: Sequence[str], reference: float = 0.0, direction: int = 1,
                level: float = 0.95) -> pd.DataFrame:
    """Per ``by`` group: the mean of ``value`` over the models (seeds), its t-interval, and the verdict of the sign
    ``direction`` of ``mean - reference`` (e.g. a probe's r above 0, an energy ratio above 1)."""
    rows = []
    for keys, g in table.groupby(list(by), sort=False):
        v = g[value].to_numpy(np.float64)
        low, high = t_interval(v, level)
        estimate = float(np.mean(v))
        rows.append({**dict(zip(by, keys if isinstance(keys, tuple) else (keys,))), "n_models": len(v),
                     "estimate": estimate, "ci_low": low, "ci_high": high,
                     "verdict": verdict(low - reference, high - reference, direction, estimate - reference)})
    return pd.DataFrame(rows)
