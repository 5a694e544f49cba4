"""Waveform attacks: adversarial audio through the madmom-exact front end (protocol §6.3, beyond the paper).

The attacker changes the samples of the normalised signal, and the whole chain is differentiable::

    segment (samples) -> frames at the file's own starts -> Hann -> |FFT| -> 149 log bands
    -> log10(1 + x) -> (x - mean) / std -> (1, 313, 149) excerpt -> model

The parts: the audio behind a cached excerpt (:func:`excerpt_audio`); segment -> excerpt (:func:`segment_excerpt`);
budgets and projections (:class:`Budget`, :func:`project_perturbation`); the attack (:func:`waveform_attack`) and its
damage (:func:`emotion_damage`); noise at the same SNR and loudness (:func:`noise_perturbation`,
:func:`relative_loudness`); the 16-bit WAV round trip (:func:`roundtrip_excerpt`). Per-segment costs: protocol §6.3.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as taf
from torch import nn

from mer_lib import artifacts
from mer_lib.attacks.engine import frozen_model, linf_radius
from mer_lib.config import EMOTIONS, FeatureConfig, check_choice
from mer_lib.data.cache import PreparedData, cut_excerpt
from mer_lib.data.frontend import (
    LogFilteredSpectrogram,
    frame_starts,
    madmom_normalize,
    num_frames,
    read_audio_int16,
    spectrogram_from_file,
)
from mer_lib.errors import MerError

#: Full scale of the normalised signal in int16 units (madmom divides int16 samples by it).
INT16_FULL_SCALE: int = 32767

#: Step rules of :func:`waveform_attack`.
UPDATES: tuple[str, ...] = ("sign", "l2")

#: Noise baselines of :func:`noise_perturbation`.
NOISE_KINDS: tuple[str, ...] = ("white", "pink")

#: Relative margin by which :func:`project_snr` lands inside the ball (float32 rounding).
_SNR_MARGIN = 2.0 ** -20


# --------------------------------------------------------------------------
# The audio behind an excerpt
# --------------------------------------------------------------------------
def attack_frontend(features: FeatureConfig | None = None, fft_dtype: torch.dtype | None = None
                    ) -> LogFilteredSpectrogram:
    """The front end of ``features`` (default: the reference's) with the FFT precision of an attack.

    ``fft_dtype``: ``None`` (float32 FFT for float32 segments: fast) or ``torch.float64`` (the cache's precision).
    """
    f = features or FeatureConfig()
    return LogFilteredSpectrogram(sample_rate=f.sample_rate, fps=f.fps, frame_size=f.frame_size,
                                  bands_per_octave=f.bands_per_octave, fmin=f.fmin, fmax=f.fmax, fref=f.fref,
                                  fft_dtype=fft_dtype)


@dataclass(frozen=True)
class ExcerptAudio:
    """The normalised samples behind one prepared excerpt.

    Attributes
    ----------
    number, audio_path, offset : int, str, int
        Excerpt ID, audio file, the excerpt's first frame.
    signal : ndarray, float32 (n,)
        Samples ``start .. start + n`` of the normalised, zero-trimmed file signal: all the excerpt's frames read.
    starts : ndarray, int64 (excerpt_frames,)
        First sample of every excerpt frame, relative to ``start`` (the file's own frame starts, protocol §3).
    start, trim_start, signal_samples : int
        Position of ``signal[0]`` in the trimmed signal; samples trimmed from the file's start; trimmed length.
    """

    number: int
    audio_path: str
    signal: np.ndarray
    starts: np.ndarray
    start: int
    trim_start: int
    signal_samples: int
    offset: int

    def file_positions(self) -> np.ndarray:
        """Indices of the segment's samples among the file's int16 samples."""
        return self.trim_start + self.start + np.arange(len(self.signal))


def _normalized_trimmed(path: Path, sample_rate: int) -> tuple[np.ndarray, int]:
    """The file's madmom-normalised signal, trimmed, and the number of samples trimmed at its start."""
    try:
        full = madmom_normalize(read_audio_int16(path, sample_rate), trim=False)
    except MerError as exc:
        raise MerError(exc.args[0] if str(path) in str(exc) else f"{path}: {exc}") from None
    nonzero = np.flatnonzero(full)
    return full[nonzero[0]: nonzero[-1] + 1], int(nonzero[0])


def excerpt_audio(prepared: PreparedData, number: int, frontend: LogFilteredSpectrogram | None = None) -> ExcerptAudio:
    """Recover the audio segment behind a prepared excerpt.

    Parameters
    ----------
    prepared, number : PreparedData, int
        The run's prepared data (``audio_path``, ``frames``, ``offset``, ``excerpt_frames``) and the excerpt ID.
    frontend : LogFilteredSpectrogram, optional
        Gives the sample rate, hop and frame size (default: the reference's).

    Raises
    ------
    MerError
        Naming the file: unknown excerpt, unreadable audio, length changed since caching, or a file shorter than the
        excerpt (wrap-padded by the data stage: no contiguous audio).
    """
    frontend = frontend or attack_frontend()
    table, length = prepared.table, int(prepared.excerpt_frames)
    if number not in table.index:
        raise MerError(f"excerpt {number} is not in the prepared data "
                       f"(numbers {table.index.min()}..{table.index.max()})")
    path = Path(table.at[number, "audio_path"])
    signal, trim_start = _normalized_trimmed(path, frontend.sample_rate)
    frames = num_frames(len(signal), frontend.hop)
    if "frames" in table.columns and frames != int(table.at[number, "frames"]):
        raise MerError(f"{path}: {frames} frames now, {int(table.at[number, 'frames'])} when the spectrogram was "
                       "cached; the audio changed since: rerun prepare_data")
    if frames < length:
        raise MerError(f"{path}: excerpt {number} has {frames} frames, fewer than the {length}-frame excerpt, so "
                       "the data stage padded it by wrapping around; a waveform attack needs a file of at least "
                       f"{length} frames ({length * frontend.hop / frontend.sample_rate:.2f} s)")
    offset = int(table.at[number, "offset"])
    starts = frame_starts(len(signal), frontend.hop)[offset: offset + length]
    begin, end = int(starts[0]), min(int(starts[-1]) + int(frontend.window.shape[-1]), len(signal))
    return ExcerptAudio(number=int(number), audio_path=str(path), signal=signal[begin:end].copy(),
                        starts=(starts - begin).astype(np.int64), start=begin, trim_start=trim_start,
                        signal_samples=len(signal), offset=offset)


class SegmentBatch(NamedTuple):
    """Segments of several excerpts, zero-padded to one length ``S``.

    Attributes
    ----------
    signal, starts, lengths : Tensor, float32 (B, S); int64 (B, T); int64 (B,)
        The segments; frame starts within each; samples of each that belong to its file (the perturbable ones).
    numbers : tuple of int
        Excerpt IDs.
    """

    signal: torch.Tensor
    starts: torch.Tensor
    lengths: torch.Tensor
    numbers: tuple[int, ...]

    def mask(self) -> torch.Tensor:
        """``(B, S)`` bool: which samples belong to the file."""
        return torch.arange(self.signal.shape[1], device=self.signal.device)[None, :] < self.lengths[:, None]


def stack_segments(items: Sequence[ExcerptAudio], frame_size: int = 2048) -> SegmentBatch:
    """Stack :class:`ExcerptAudio` segments (at least one, equal frame counts) into a :class:`SegmentBatch` on the CPU.

    The batch is long enough for every frame of ``frame_size`` samples.
    """
    if not items:
        raise MerError("stack_segments: no segments")
    if len({len(a.starts) for a in items}) != 1:
        raise MerError(f"stack_segments: excerpts of different frame counts {sorted({len(a.starts) for a in items})}")
    size = max(max(int(a.starts[-1]) + frame_size, len(a.signal)) for a in items)
    signal = torch.zeros(len(items), size, dtype=torch.float32)
    for i, a in enumerate(items):
        signal[i, : len(a.signal)] = torch.from_numpy(np.asarray(a.signal, np.float32))
    starts = torch.from_numpy(np.stack([a.starts for a in items]).astype(np.int64))
    lengths = torch.tensor([len(a.signal) for a in items], dtype=torch.int64)
    return SegmentBatch(signal, starts, lengths, tuple(int(a.number) for a in items))


# --------------------------------------------------------------------------
# Segment -> standardised excerpt (differentiable)
# --------------------------------------------------------------------------
class _FrameMagnitude(torch.autograd.Function):
    """``|rfft(window * frame)|`` at given frame starts, bins ``0 .. bins - 1``, with a cheap backward pass.

    Backward: one inverse real FFT and an overlap-add (``index_add_``: deterministic on CPU, and on CUDA in
    deterministic mode) instead of torch's complex FFT backward.
    """

    @staticmethod
    def forward(ctx, signal: torch.Tensor, starts: torch.Tensor, window: torch.Tensor, bins: int) -> torch.Tensor:
        b, size = signal.shape
        n = window.shape[-1]
        first = starts + size * torch.arange(b, device=signal.device)[:, None]  # frame starts in the flat batch
        flat = (first[:, :, None] + torch.arange(n, device=signal.device)).reshape(-1)
        frames = signal.reshape(-1)[flat].view(b, starts.shape[1], n).to(window.dtype) * window
        spectrum = torch.fft.rfft(frames, dim=-1)[..., :bins]
        magnitude = spectrum.abs()
        ctx.save_for_backward(flat, spectrum, magnitude, window)
        ctx.shape, ctx.dtype = (b, size), signal.dtype
        return magnitude

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        flat, spectrum, magnitude, window = ctx.saved_tensors
        n = window.shape[-1]
        scale = grad / torch.where(magnitude > 0, magnitude, math.inf)
        inner = min(scale.shape[-1], (n + 1) // 2)  # bins 1 .. ceil(n/2) - 1 appear twice in a real spectrum
        scale[..., 1:inner] *= 0.5
        frames = torch.fft.irfft(spectrum * scale, n=n, dim=-1) * (window * n)  # missing bins count as zero
        out = frames.new_zeros(ctx.shape[0] * ctx.shape[1]).index_add_(0, flat, frames.reshape(-1))
        return out.view(ctx.shape).to(ctx.dtype), None, None, None


def segment_spectrogram(signal: torch.Tensor, starts: torch.Tensor, frontend: LogFilteredSpectrogram) -> torch.Tensor:
    """Log-filtered spectrogram ``(B, T, bands)`` of segments, frames at given starts (differentiable).

    The arithmetic of :func:`mer_lib.data.frontend.log_filtered_spectrogram` (window and FFT in ``frontend.fft_dtype``,
    the rest in the signal's dtype); frames past a segment's end read its zero padding.

    Parameters
    ----------
    signal, starts : Tensor (B, S), int64 Tensor (B, T)
        Normalised segments; frame starts within each (every frame must fit into ``S``).
    frontend : LogFilteredSpectrogram
        Window, filterbank and FFT precision (``peak_normalize`` must be off).
    """
    if frontend.peak_normalize:
        raise MerError("segment_spectrogram: the front end must not peak-normalise (segments are normalised already)")
    frame_size = int(frontend.window.shape[-1])
    if signal.ndim != 2 or starts.ndim != 2 or starts.shape[0] != signal.shape[0]:
        raise MerError(f"segments must be (B, S) and starts (B, T), got {tuple(signal.shape)}, {tuple(starts.shape)}")
    if int(starts.max()) + frame_size > signal.shape[1] or int(starts.min()) < 0:
        raise MerError(f"frame starts {int(starts.min())}..{int(starts.max())} do not fit frames of {frame_size} "
                       f"samples into segments of {signal.shape[1]}")
    window = frontend.window.to(device=signal.device, dtype=frontend.fft_dtype or signal.dtype)
    magnitude = _FrameMagnitude.apply(signal, starts.to(signal.device), window, frame_size // 2).to(signal.dtype)
    return torch.log1p(magnitude @ frontend.filterbank.to(signal.dtype)) / math.log(10.0)


def segment_excerpt(signal: torch.Tensor, starts: torch.Tensor, frontend: LogFilteredSpectrogram,
                    mean: float, std: float) -> torch.Tensor:
    """Segments -> standardised excerpts ``(B, 1, T, bands)``, the model's input (differentiable).

    :func:`segment_spectrogram`, then ``(x - mean) / std`` with the run's statistics (``PreparedData.mean``, ``.std``).
    Reproduces the prepared excerpt exactly with a float64 FFT (the cache's front end), within 1e-5 with float32.
    """
    return ((segment_spectrogram(signal, starts, frontend) - mean) / std).unsqueeze(1)


# --------------------------------------------------------------------------
# Budgets and projections
# --------------------------------------------------------------------------
def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Budget:
    """What the attacker may change: an SNR (an L2 ball), an L-infinity bound, or both (:class:`MerError` for neither).

    Attributes
    ----------
    snr_db : float, optional
        Lowest SNR in dB, finite: ``||delta||_2 <= ||x||_2 * 10 ** (-snr_db / 20)``, ``x`` the clean segment.
    linf : float, optional
        Largest change of a sample in **int16 units** (1 = ``1 / 32767`` of the normalised signal's full scale), > 0.
    """

    snr_db: float | None = None
    linf: float | None = None

    def __post_init__(self) -> None:
        if self.snr_db is None and self.linf is None:
            raise MerError("a waveform budget needs snr_db (dB) and/or linf (int16 units); got neither")
        if self.snr_db is not None and not (_is_real(self.snr_db) and math.isfinite(self.snr_db)):
            raise MerError(f"budget snr_db must be a finite number of dB, got {self.snr_db!r}")
        if self.linf is not None and not (_is_real(self.linf) and math.isfinite(self.linf) and self.linf > 0):
            raise MerError(f"budget linf must be a finite positive number of int16 units, got {self.linf!r}")

    def linf_float(self) -> float | None:
        """The L-infinity bound in units of the normalised signal (``linf / 32767``)."""
        return None if self.linf is None else float(self.linf) / INT16_FULL_SCALE


def snr_radius(clean: torch.Tensor, snr_db: float) -> torch.Tensor:
    """L2 radius of the SNR ball of every segment: ``||x||_2 * 10 ** (-snr_db / 20)`` (float64, (B,)).

    Raises :class:`MerError` for a non-finite SNR or a silent segment (no SNR is defined).
    """
    Budget(snr_db=snr_db)
    norms = clean.detach().double().flatten(1).norm(dim=1)
    if bool((norms == 0).any()):
        raise MerError(f"segments {torch.nonzero(norms == 0).flatten().tolist()} are silent: no SNR is defined")
    return norms * 10.0 ** (-float(snr_db) / 20.0)


def project_snr(delta: torch.Tensor, radius: torch.Tensor | float) -> torch.Tensor:
    """Projection of every perturbation ``(B, S)`` onto its L2 ball, radii ``(B,)`` or a float (:func:`snr_radius`).

    One outside is scaled onto the ball and then by ``1 - 2**-20``, so that float32 rounding cannot leave it outside
    (and a second projection changes nothing); one inside is returned unchanged. Radii must be finite and non-negative.
    """
    radius = torch.as_tensor(radius, dtype=torch.float64, device=delta.device).expand(delta.shape[0])
    if not bool(torch.isfinite(radius).all()) or bool((radius < 0).any()):
        raise MerError(f"SNR-ball radii must be finite and non-negative, got {radius.tolist()}")
    norm = delta.detach().double().flatten(1).norm(dim=1)
    outside = norm > radius
    factor = torch.where(outside, radius / torch.where(outside, norm, 1.0) * (1.0 - _SNR_MARGIN), 1.0)
    return torch.where(outside[:, None], (delta.double() * factor[:, None]).to(delta.dtype), delta)


def project_linf(delta: torch.Tensor, linf: float) -> torch.Tensor:
    """Clamp to ``[-linf, linf]``, ``linf`` in int16 units (converted and rounded down by :func:`linf_radius`)."""
    Budget(linf=linf)
    bound = linf_radius(float(linf) / INT16_FULL_SCALE)
    return delta.clamp(-bound, bound)


def clip_to_range(clean: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The perturbation that keeps ``clean + delta`` in the int16 range ``[-1, 1]`` of the normalised signal."""
    return (clean + delta).clamp(-1.0, 1.0) - clean


def project_perturbation(delta: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor,
                         radius: torch.Tensor | None, linf: float | None) -> torch.Tensor:
    """Every constraint at once: the file's samples only, the int16 range, L-infinity, then the SNR ball.

    The result satisfies all of them (the range up to float32 rounding of ``clean + delta``).

    Parameters
    ----------
    delta, clean, mask : Tensor (B, S)
        Perturbations, clean segments, and (bool) the samples that belong to the file (:meth:`SegmentBatch.mask`).
    radius, linf : Tensor (B,), float, optional
        SNR-ball radii (:func:`snr_radius`); L-infinity bound in int16 units.
    """
    delta = clip_to_range(clean, delta * mask) * mask
    if linf is not None:  # after the clip: float32 rounding of (clean + delta) - clean can exceed the bound by an ulp
        delta = project_linf(delta, linf)
    return delta if radius is None else project_snr(delta, radius)


def achieved_snr_db(clean: torch.Tensor, delta: torch.Tensor) -> np.ndarray:
    """``10 log10(||x||^2 / ||delta||^2)`` per example (float64; ``inf`` for a zero perturbation)."""
    signal = clean.detach().double().flatten(1).pow(2).sum(dim=1).cpu().numpy()
    noise = delta.detach().double().flatten(1).pow(2).sum(dim=1).cpu().numpy()
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(signal / noise)


def linf_int16(delta: torch.Tensor) -> np.ndarray:
    """Largest absolute sample of every perturbation, in int16 units (float64, (B,))."""
    return delta.detach().double().flatten(1).abs().amax(dim=1).cpu().numpy() * INT16_FULL_SCALE


def step_sizes(update: str, steps: int, step_scale: float, radius: torch.Tensor | None, linf: float | None,
               lengths: torch.Tensor) -> torch.Tensor:
    """Step of every example: ``step_scale * size / steps`` (float64, (B,)).

    ``size``: the L2 radius for ``"l2"`` steps, the L-infinity radius for ``"sign"`` steps; a budget of the other kind
    is converted with the sample count ``n`` (L-infinity ``r`` reaches ``r sqrt(n)`` in L2); with both, the smaller.
    """
    check_choice("update", update, UPDATES)
    n = lengths.double().to(radius.device if radius is not None else lengths.device)
    bound = None if linf is None else torch.full_like(n, float(linf) / INT16_FULL_SCALE)
    if update == "l2":
        sizes = [s for s in (radius, None if bound is None else bound * n.sqrt()) if s is not None]
    else:
        sizes = [s for s in (bound, None if radius is None else radius / n.sqrt()) if s is not None]
    size = sizes[0] if len(sizes) == 1 else torch.minimum(sizes[0], sizes[1])
    return step_scale * size / steps


# --------------------------------------------------------------------------
# The attack
# --------------------------------------------------------------------------
@dataclass
class WaveformAttackResult:
    """Per-example outcome of :func:`waveform_attack` (first axis = example).

    Attributes
    ----------
    delta, adversarial : Tensor, float32 (B, S)
        The returned perturbation and ``clean + delta`` (zero-padded like the batch).
    snr_db, linf : ndarray, float64 (B,)
        Achieved SNR (dB) and L-infinity norm (int16 units) of ``delta``.
    clean_emotions, adv_emotions : ndarray, float32 (B, 8)
        Predictions for the clean and the adversarial segment.
    clean_bottleneck, adv_bottleneck : ndarray, float32 (B, 7) or None
        Bottleneck activations of bottleneck models.
    dmae, pred_change : ndarray, float64 (B,)
        :func:`emotion_damage` of the adversarial predictions.
    best_step : ndarray, int64 (B,)
        The step whose iterate was returned (0: the clean segment).
    forward_passes, backward_passes : int
        Example passes through front end and model.
    """

    delta: torch.Tensor
    adversarial: torch.Tensor
    snr_db: np.ndarray
    linf: np.ndarray
    clean_emotions: np.ndarray
    adv_emotions: np.ndarray
    clean_bottleneck: np.ndarray | None
    adv_bottleneck: np.ndarray | None
    dmae: np.ndarray
    pred_change: np.ndarray
    best_step: np.ndarray
    forward_passes: int
    backward_passes: int


def emotion_damage(clean: np.ndarray, adversarial: np.ndarray, y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dMAE and mean absolute prediction change of every example, from ``(B, 8)`` arrays (labels divided by 10).

    Returns
    -------
    dmae : ndarray (B,)
        ``mean |adversarial - true| - mean |clean - true|`` over the emotions (its mean over excerpts is the ``dmae``
        of :func:`mer_lib.attacks.logs.per_model_metrics`).
    pred_change : ndarray (B,)
        ``mean |adversarial - clean|``.
    """
    clean, adv, true = (np.asarray(a, np.float64) for a in (clean, adversarial, y_true))
    return np.abs(adv - true).mean(axis=1) - np.abs(clean - true).mean(axis=1), np.abs(adv - clean).mean(axis=1)


def predict_segments(model: nn.Module, batch: SegmentBatch, frontend: LogFilteredSpectrogram, mean: float,
                     std: float, delta: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions for segments plus ``delta``, no gradients: float32 emotions (B, 8), bottleneck (B, 7) or None."""
    device = next(model.parameters()).device
    signal = batch.signal.to(device) + (0.0 if delta is None else delta.to(device))
    with frozen_model(model), torch.no_grad():
        out = model(segment_excerpt(signal, batch.starts.to(device), frontend.to(device), mean, std))
    bottleneck = None if out.bottleneck is None else out.bottleneck.float().cpu().numpy()
    return out.emotions.float().cpu().numpy(), bottleneck


def _check_attack_args(batch: SegmentBatch, y: np.ndarray | torch.Tensor, budget: Budget, steps: int, update: str,
                       step_scale: float) -> None:
    if not isinstance(budget, Budget):
        raise MerError(f"budget must be a Budget (snr_db and/or linf), got {budget!r}")
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise MerError(f"steps must be a positive integer, got {steps!r}")
    check_choice("update", update, UPDATES)
    if not (_is_real(step_scale) and math.isfinite(step_scale) and step_scale > 0):
        raise MerError(f"step_scale must be a finite positive number, got {step_scale!r}")
    if tuple(np.shape(y)) != (batch.signal.shape[0], len(EMOTIONS)):
        raise MerError(f"labels must have shape ({batch.signal.shape[0]}, {len(EMOTIONS)}), got {tuple(np.shape(y))}")


def _direction(grad: torch.Tensor, update: str) -> torch.Tensor:
    """Ascent direction: ``sign(grad)`` or ``grad / ||grad||_2`` per example (zero for a zero gradient)."""
    if update == "sign":
        return torch.sign(grad)
    norm = grad.double().flatten(1).norm(dim=1)
    return (grad.double() / torch.where(norm > 0, norm, 1.0)[:, None]).to(grad.dtype)


@dataclass
class _Best:
    """The best iterate so far of every example (largest MSE), with its predictions."""

    delta: torch.Tensor
    loss: torch.Tensor
    emotions: torch.Tensor | None = None
    bottleneck: torch.Tensor | None = None
    step: torch.Tensor | None = None
    clean: tuple | None = None

    def update(self, step: int, delta: torch.Tensor, loss: torch.Tensor, out) -> None:
        emotions = out.emotions.detach()
        bottleneck = None if out.bottleneck is None else out.bottleneck.detach()
        if step == 0:
            self.clean = (emotions.clone(), None if bottleneck is None else bottleneck.clone())
            self.emotions, self.bottleneck = emotions.clone(), bottleneck
            self.step = torch.zeros(len(loss), dtype=torch.long, device=loss.device)
        better = loss > self.loss
        self.loss = torch.where(better, loss, self.loss)
        self.delta = torch.where(better[:, None], delta, self.delta)
        self.emotions = torch.where(better[:, None], emotions, self.emotions)
        if bottleneck is not None:
            self.bottleneck = torch.where(better[:, None], bottleneck, self.bottleneck)
        self.step = torch.where(better, torch.full_like(self.step, step), self.step)


def _numpy(a: torch.Tensor | None) -> np.ndarray | None:
    return None if a is None else a.detach().float().cpu().numpy()


def waveform_attack(model: nn.Module, batch: SegmentBatch, y: np.ndarray | torch.Tensor,
                    frontend: LogFilteredSpectrogram, mean: float, std: float, budget: Budget, steps: int = 10,
                    update: str = "l2", step_scale: float = 2.5, *,
                    init: torch.Tensor | None = None) -> WaveformAttackResult:
    """Projected gradient ascent on the emotion MSE, through front end, standardisation and model.

    Maximises the paper's untargeted objective, the MSE between predictions and the **true labels**, for a fixed number
    of steps, and returns per example the evaluated iterate with the largest MSE (start and final included), so more
    steps never return a weaker adversary. Deterministic.

    Parameters
    ----------
    model : MERModel
        The attacked model (put in eval mode, parameters frozen; both restored).
    batch : SegmentBatch
        Clean segments (:func:`stack_segments`).
    y : array (B, 8)
        True labels (divided by 10).
    frontend, mean, std
        As for :func:`segment_excerpt` (``frontend.fft_dtype`` sets the FFT precision).
    budget : Budget
        SNR and/or L-infinity bound.
    steps : int
        Gradient steps (``steps + 1`` evaluations).
    update, step_scale : str, float
        ``"l2"`` (L2-normalised gradient) or ``"sign"``; step as a multiple of ``radius / steps`` (:func:`step_sizes`).
    init : Tensor (B, S), optional
        Start, projected onto the budget first (e.g. the adversary of a smaller budget); default zero. With a start the
        clean segment is evaluated once more, and ``best_step`` 0 means the projected start.
    """
    _check_attack_args(batch, y, budget, steps, update, step_scale)
    device = next(model.parameters()).device
    x, starts = batch.signal.to(device, torch.float32), batch.starts.to(device)
    mask, frontend = batch.mask().to(device), frontend.to(device)
    yt = torch.tensor(np.array(y, dtype=np.float32), device=device)
    radius = None if budget.snr_db is None else snr_radius(x, budget.snr_db)
    rates = step_sizes(update, int(steps), float(step_scale), radius, budget.linf, batch.lengths.to(device))
    delta = torch.zeros_like(x) if init is None else project_perturbation(
        init.detach().to(device, torch.float32), x, mask, radius, budget.linf)
    best = _Best(delta=delta, loss=torch.full((len(x),), -math.inf, device=device))
    clean = None if init is None else predict_segments(model, batch, frontend, mean, std)
    with frozen_model(model):
        for step in range(int(steps) + 1):
            last = step == steps
            d = delta.detach().requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                out = model(segment_excerpt(x + d, starts, frontend, mean, std))
                loss = (out.emotions - yt).pow(2).mean(dim=1)
            best.update(step, d.detach(), loss.detach(), out)
            if last:
                break
            (grad,) = torch.autograd.grad(loss.sum(), d)
            moved = delta + (_direction(grad * mask, update).double() * rates[:, None]).float()
            delta = project_perturbation(moved, x, mask, radius, budget.linf)
    clean_e, clean_b = (_numpy(best.clean[0]), _numpy(best.clean[1])) if clean is None else clean
    adv_e = _numpy(best.emotions)
    dmae, change = emotion_damage(clean_e, adv_e, np.asarray(y))
    return WaveformAttackResult(
        delta=best.delta.detach(), adversarial=(x + best.delta).detach(), snr_db=achieved_snr_db(x, best.delta),
        linf=linf_int16(best.delta),
        clean_emotions=clean_e, adv_emotions=adv_e, clean_bottleneck=clean_b, adv_bottleneck=_numpy(best.bottleneck),
        dmae=dmae, pred_change=change, best_step=best.step.cpu().numpy().astype(np.int64),
        forward_passes=(int(steps) + 1 + (init is not None)) * len(x), backward_passes=int(steps) * len(x))


# --------------------------------------------------------------------------
# Noise at the same SNR, loudness
# --------------------------------------------------------------------------
def colored_noise(kind: str, length: int, seed: int | Sequence[int]) -> np.ndarray:
    """White or pink noise of unit RMS (float32, ``length >= 2`` samples), reproducible from ``seed`` (``default_rng``).

    Pink: seeded white noise with every real-FFT bin ``k >= 1`` divided by ``sqrt(k)`` (power ~ ``1/f``), DC zeroed.
    """
    check_choice("noise kind", kind, NOISE_KINDS)
    if not isinstance(length, (int, np.integer)) or length < 2:
        raise MerError(f"noise length must be an integer >= 2, got {length!r}")
    noise = np.random.default_rng(seed).standard_normal(int(length))
    if kind == "pink":
        spectrum = np.fft.rfft(noise)
        spectrum[0] = 0.0
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        noise = np.fft.irfft(spectrum, n=int(length))
    return (noise / np.sqrt(np.mean(noise ** 2))).astype(np.float32)


def unit_noise(batch: SegmentBatch, kind: str, seeds: Sequence) -> torch.Tensor:
    """Unit-RMS noise (:func:`colored_noise`, one seed per example) of every segment's length, zero-padded (float64)."""
    if len(seeds) != len(batch.numbers):
        raise MerError(f"unit_noise: {len(seeds)} seeds for {len(batch.numbers)} segments")
    noise = torch.zeros(batch.signal.shape, dtype=torch.float64)
    for i, (n, seed) in enumerate(zip(batch.lengths.tolist(), seeds)):
        noise[i, :n] = torch.from_numpy(colored_noise(kind, n, seed).astype(np.float64))
    return noise


def noise_perturbation(batch: SegmentBatch, kind: str, snr_db: float, seeds: Sequence,
                       noise: torch.Tensor | None = None) -> torch.Tensor:
    """Noise perturbations at an SNR (``torchaudio.functional.add_noise``): float32 (B, S), zero outside the file.

    The noise is scaled to the SNR over the file's samples (float64), then clipped to the int16 range
    (:func:`clip_to_range`), which can raise the SNR a little near full scale (:func:`achieved_snr_db` tells).

    Parameters
    ----------
    batch, seeds : SegmentBatch, sequence
        Clean segments; one seed (int or sequence of ints) per example.
    kind, snr_db : str, float
        ``"white"`` or ``"pink"``; the target SNR in dB.
    noise : Tensor (B, S), optional
        ``unit_noise(batch, kind, seeds)``, if computed already (the same noise at several SNRs).
    """
    Budget(snr_db=snr_db)
    check_choice("noise kind", kind, NOISE_KINDS)
    noise = unit_noise(batch, kind, seeds) if noise is None else noise.double().cpu()
    clean = batch.signal.double()
    snr = torch.full((len(clean),), float(snr_db), dtype=torch.float64)
    noisy = taf.add_noise(clean, noise, snr, lengths=batch.lengths)
    delta = ((noisy - clean) * batch.mask()).float()
    return clip_to_range(batch.signal, delta) * batch.mask()


def loudness_lufs(signal: torch.Tensor, lengths: torch.Tensor, sample_rate: int) -> np.ndarray:
    """Integrated loudness (ITU-R BS.1770, ``torchaudio.functional.loudness``) of every signal, in LUFS."""
    return np.array([float(taf.loudness(signal[i, :n].detach().double().cpu()[None], sample_rate))
                     for i, n in enumerate(lengths.tolist())], dtype=np.float64)


def relative_loudness(clean: torch.Tensor, delta: torch.Tensor, lengths: torch.Tensor, sample_rate: int,
                      reference: np.ndarray | None = None) -> np.ndarray:
    """Loudness of each perturbation relative to its signal, in LU (ITU-R BS.1770); ``-inf`` for a zero perturbation.

    The perturbation is scaled to the signal's energy (gain ``g``) before ``torchaudio.functional.loudness`` and
    corrected by ``-20 log10 g``, so its absolute gate (-70 LUFS) cannot drop a quiet one (the relative gate applies).

    Parameters
    ----------
    clean, delta, lengths : Tensor (B, S), (B, S), (B,)
        Signals, perturbations, and the samples of each that count.
    sample_rate, reference : int, ndarray (B,), optional
        Sample rate; :func:`loudness_lufs` of ``clean``, if computed already.
    """
    reference = loudness_lufs(clean, lengths, sample_rate) if reference is None else np.asarray(reference)
    out = np.full(len(clean), -math.inf, dtype=np.float64)
    for i, n in enumerate(lengths.tolist()):
        x = clean[i, :n].detach().double().cpu()
        d = delta[i, :n].detach().double().cpu()
        if float(d.norm()) > 0.0:
            gain = float(x.norm() / d.norm())
            out[i] = float(taf.loudness((d * gain)[None], sample_rate)) - 20.0 * math.log10(gain) - reference[i]
    return out


# --------------------------------------------------------------------------
# The 16-bit round trip
# --------------------------------------------------------------------------
def write_wav_int16(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> Path:
    """Atomically write mono int16 samples (or floats in ``[-1, 1]``, rounded) as a 16-bit WAV."""
    data = np.asarray(samples)
    if data.dtype != np.int16:
        data = np.round(np.clip(data.astype(np.float64), -1.0, 1.0) * INT16_FULL_SCALE).astype(np.int16)
    with artifacts.atomic_path(path) as tmp:
        sf.write(str(tmp), data, int(sample_rate), format="WAV", subtype="PCM_16")
    return Path(path)


def int16_for_normalized(target: np.ndarray, peak: int) -> np.ndarray:
    """The int16 samples whose madmom normalisation ``trunc(w / (peak / 32767))`` comes closest to ``target``.

    ``target``: wanted normalised values in int16 units (``round(32767 * x)``); ``peak``: the file's largest absolute
    int16 sample (1 .. 32768). Chosen among the five integers nearest to ``target * peak / 32767`` within
    ``[-peak, peak]`` (ties: the nearest to that estimate).
    """
    if not 1 <= int(peak) <= 32768:
        raise MerError(f"peak must be a file's largest absolute int16 sample (1..32768), got {peak!r}")
    target = np.asarray(target, dtype=np.float64)
    scale = int(peak) / float(INT16_FULL_SCALE)
    estimate = np.round(target * scale)
    candidates = np.clip(estimate[None] + np.array([0, -1, 1, -2, 2])[:, None], -int(peak), min(int(peak), 32767))
    error = np.abs(np.trunc(candidates / scale) - target[None])
    return candidates[np.argmin(error, axis=0), np.arange(target.size)].astype(np.int16)


def quantize_into_file(x16: np.ndarray, audio: ExcerptAudio, adversarial: np.ndarray) -> np.ndarray:
    """The file's int16 samples ``x16`` with the adversarial segment written in (:func:`int16_for_normalized`).

    ``x16`` as :func:`mer_lib.data.frontend.read_audio_int16` reads it; ``adversarial``: the segment's normalised floats
    (clipped to ``[-1, 1]``), placed where ``audio`` says. The first and last samples that survive zero trimming stay
    non-zero, else reading back would shift every frame.
    """
    adversarial = np.asarray(adversarial, np.float64)[: len(audio.signal)]
    if adversarial.shape != audio.signal.shape:
        raise MerError(f"{audio.audio_path}: adversarial segment of {adversarial.size} samples, expected "
                       f"{audio.signal.size}")
    peak = int(np.max(np.abs(np.asarray(x16, np.int32))))
    target = np.round(np.clip(adversarial, -1.0, 1.0) * INT16_FULL_SCALE)
    out = np.array(x16, dtype=np.int16, copy=True)
    positions = audio.file_positions()
    out[positions] = int16_for_normalized(target, peak)
    scale = peak / float(INT16_FULL_SCALE)
    for pos in (audio.trim_start, audio.trim_start + audio.signal_samples - 1):
        if positions[0] <= pos <= positions[-1] and np.trunc(out[pos] / scale) == 0:
            out[pos] = np.int16(np.sign(x16[pos]) * min(peak, math.ceil(scale)))
    return out


@dataclass(frozen=True)
class RoundTrip:
    """An adversarial segment after a 16-bit WAV file and the normal pipeline.

    Attributes
    ----------
    excerpt : ndarray, float32 (1, 1, T, bands)
        The standardised excerpt read back from the WAV file.
    path : Path
        The WAV file (the whole file, adversarial segment written in).
    peak_preserved : bool
        The file's peak is unchanged; if not, madmom's peak normalisation rescales the whole file on reading.
    max_error : float
        Largest difference between the read-back and the adversarial segment in int16 units (about one step of the
        file's int16 grid; larger if the peak changed). A clean segment comes back bit-exact.
    """

    excerpt: np.ndarray
    path: Path
    peak_preserved: bool
    max_error: float


def roundtrip_excerpt(audio: ExcerptAudio, adversarial: np.ndarray | torch.Tensor, path: str | os.PathLike,
                      frontend: LogFilteredSpectrogram, mean: float, std: float, excerpt_frames: int) -> RoundTrip:
    """Write an adversarial segment into its file as a 16-bit WAV (atomically) and read the excerpt back.

    Read back as the data stage reads it (:func:`mer_lib.data.frontend.spectrogram_from_file`), cut at the excerpt's
    offset and standardised.

    Parameters
    ----------
    audio, adversarial : ExcerptAudio, array or Tensor (>= n,)
        The excerpt's segment; the adversarial segment (samples past ``n`` are ignored).
    path : path-like
        The WAV file to write.
    frontend, mean, std, excerpt_frames
        The pipeline's front end (the cache's: a float64 FFT), standardisation statistics, excerpt length in frames.
    """
    adv = torch.as_tensor(adversarial).detach().double().cpu().numpy()[: len(audio.signal)]
    x16 = read_audio_int16(audio.audio_path, frontend.sample_rate)
    written = quantize_into_file(x16, audio, adv)
    write_wav_int16(path, written, frontend.sample_rate)
    spec = spectrogram_from_file(path, frontend)
    back, _ = _normalized_trimmed(Path(path), frontend.sample_rate)
    segment = back[audio.start: audio.start + len(audio.signal)].astype(np.float64)
    error = np.inf if len(segment) != len(adv) else float(np.max(np.abs(segment - np.clip(adv, -1.0, 1.0))))
    excerpt = ((cut_excerpt(spec, audio.offset, int(excerpt_frames))[None, None] - mean) / std).astype(np.float32)
    peak_before = int(np.max(np.abs(x16.astype(np.int32))))
    return RoundTrip(excerpt=excerpt, path=Path(path), peak_preserved=int(np.max(np.abs(written.astype(np.int32))))
                     == peak_before, max_error=error * INT16_FULL_SCALE)
