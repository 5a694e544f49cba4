"""Who uses the cue of the mechanism world, and what an attack exploits (notebook 10, protocol §2.3).

:func:`cue_band_mask` marks the spectrogram bands of the cue; :func:`band_energy_share` is the share of a
perturbation's energy in them (against :func:`band_area_share`, their share of the spectrogram); :func:`probe_r`
is the cross-validated r of a linear probe, e.g. of the cue level on a model's embedding.
"""
from __future__ import annotations

import numpy as np

from mer_lib.config import FeatureConfig
from mer_lib.data.frontend import fft_bin_frequencies, log_filterbank
from mer_lib.errors import MerError
from mer_lib.metrics import pearson_per_column
from mer_lib.models.refit import least_squares_layer


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
