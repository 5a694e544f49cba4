"""The front end: madmom 0.16.1's ``LogarithmicFilteredSpectrogram`` rebuilt in PyTorch (protocol §3).

:func:`read_audio_int16` and :func:`madmom_normalize` read a file as madmom does; :class:`LogFilteredSpectrogram`
frames it with the non-integer hop ``22050 / 31.3``, windows, takes the FFT magnitude, applies
:func:`log_filterbank` and returns ``log10(1 + x)``. Frames are gathered with an index matrix because
``torch.stft`` needs an integer hop; this keeps the chain differentiable with respect to the waveform (waveform
attacks) and batched on CPU or GPU. Tested against madmom's own output in ``reference/madmom``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn

from mer_lib.config import BANDS_PER_OCTAVE, FMAX, FMIN, FPS, FRAME_SIZE, FREF, SAMPLE_RATE
from mer_lib.errors import MerError


# --------------------------------------------------------------------------
# Filterbank (numpy, float32, exactly madmom's construction)
# --------------------------------------------------------------------------
def fft_bin_frequencies(frame_size: int = FRAME_SIZE, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Centre frequencies (Hz) ``k * sample_rate / frame_size`` of the ``frame_size // 2`` kept bins (no Nyquist)."""
    return np.arange(frame_size // 2, dtype=np.float64) * sample_rate / frame_size


def log_frequencies(bands_per_octave: int = BANDS_PER_OCTAVE, fmin: float = FMIN, fmax: float = FMAX,
                    fref: float = FREF) -> np.ndarray:
    """Nominal band frequencies ``fref * 2**(k / bands_per_octave)`` within ``[fmin, fmax]`` (232 for the reference)."""
    lo = math.floor(math.log2(fmin / fref) * bands_per_octave)
    hi = math.ceil(math.log2(fmax / fref) * bands_per_octave)
    freqs = fref * 2.0 ** (np.arange(lo, hi, dtype=np.float64) / bands_per_octave)
    return freqs[(freqs >= fmin) & (freqs <= fmax)]


def frequencies_to_bins(frequencies: np.ndarray, bin_frequencies: np.ndarray) -> np.ndarray:
    """Index of the nearest FFT bin of every frequency (an exact tie goes up; above the last bin: the last bin)."""
    upper = np.clip(np.searchsorted(bin_frequencies, frequencies), 1, len(bin_frequencies) - 1)
    dist_lower = frequencies - bin_frequencies[upper - 1]
    dist_upper = bin_frequencies[upper] - frequencies
    return upper - (dist_lower < dist_upper).astype(upper.dtype)


def triangular_filterbank(bins: np.ndarray, num_fft_bins: int) -> np.ndarray:
    """Area-normalised float32 triangular filters on consecutive distinct ``bins``: ``(num_fft_bins, bands)``."""
    bins = np.unique(bins)
    if len(bins) < 3:
        raise MerError(f"a filterbank needs at least 3 distinct FFT bins, got {len(bins)}")
    fb = np.zeros((num_fft_bins, len(bins) - 2), dtype=np.float32)
    for band, (start, peak, stop) in enumerate(zip(bins[:-2], bins[1:-1], bins[2:])):
        rise = np.linspace(0.0, 1.0, peak - start, endpoint=False)
        fall = np.linspace(1.0, 0.0, stop - peak, endpoint=False)
        tri = np.concatenate([rise, fall]).astype(np.float32)
        fb[start:stop, band] = tri / tri.sum(dtype=np.float32)
    return fb


def log_filterbank(sample_rate: int = SAMPLE_RATE, frame_size: int = FRAME_SIZE,
                   bands_per_octave: int = BANDS_PER_OCTAVE, fmin: float = FMIN, fmax: float = FMAX,
                   fref: float = FREF) -> np.ndarray:
    """madmom's ``LogarithmicFilterbank``: ``(frame_size // 2, bands)`` float32, 1024 x 149 for the reference."""
    bin_freqs = fft_bin_frequencies(frame_size, sample_rate)
    bins = frequencies_to_bins(log_frequencies(bands_per_octave, fmin, fmax, fref), bin_freqs)
    return triangular_filterbank(bins, len(bin_freqs))


# --------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------
def num_frames(num_samples: int, hop: float) -> int:
    """Number of frames madmom makes of ``num_samples`` samples: ``ceil(L / hop)``."""
    return int(math.ceil(num_samples / hop))


def frame_starts(num_samples: int, hop: float) -> np.ndarray:
    """First sample of every frame: ``int(i * hop)`` (truncation, float64 hop)."""
    return (np.arange(num_frames(num_samples, hop), dtype=np.float64) * hop).astype(np.int64)


# --------------------------------------------------------------------------
# Audio in, madmom's way
# --------------------------------------------------------------------------
def read_audio_int16(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono int16 at ``sample_rate``, as madmom does (channels averaged, then truncated).

    Quirk (protocol §3): a file at another rate is resampled with librosa (soxr), not ffmpeg, so it matches madmom
    (like MP3) only up to decoder differences; 16-bit WAV/FLAC at ``sample_rate`` are bit-exact.

    Raises
    ------
    MerError
        If the file is missing or undecodable, or holds non-finite samples when resampled (files read straight to
        int16 cannot show them; the loader's audio checks refuse such files).
    """
    path = Path(path)
    if not path.is_file():
        raise MerError(f"{path}: audio file not found")
    try:
        info = sf.info(str(path))
        if info.samplerate == sample_rate:
            data = sf.read(str(path), dtype="int16", always_2d=True)[0]
            if data.shape[1] == 1:
                return np.ascontiguousarray(data[:, 0])
            return np.mean(data, axis=1).astype(np.int16)
        import librosa

        data = sf.read(str(path), dtype="float32", always_2d=True)[0].mean(axis=1)
        if not np.isfinite(data).all():
            raise MerError(f"{path}: the audio holds non-finite samples (NaN or infinity); expected finite audio")
        data = librosa.resample(data, orig_sr=info.samplerate, target_sr=sample_rate)
        return np.clip(np.round(data * 32768.0), -32768, 32767).astype(np.int16)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise MerError(f"{path}: cannot decode audio ({exc})") from exc


def madmom_normalize(x16: np.ndarray, trim: bool = True) -> np.ndarray:
    """madmom's ``norm=True`` on int16 data (truncating), then ``trim_zeros`` if ``trim``, as float32 ``x / 32767``.

    Raises
    ------
    MerError
        If ``x16`` is not int16, or is empty or all zeros.
    """
    x = np.asarray(x16)
    if x.dtype != np.int16:
        raise MerError(f"madmom_normalize expects int16 samples, got {x.dtype}")
    peak = np.max(np.abs(x.astype(np.int32))) if x.size else 0
    if peak == 0:
        raise MerError("the audio signal is empty or silent (all samples are zero)")
    y = np.trunc(x / (peak / 32767.0))
    if trim:
        y = np.trim_zeros(y)
    return (y / 32767.0).astype(np.float32)


# --------------------------------------------------------------------------
# The differentiable spectrogram
# --------------------------------------------------------------------------
def log_filtered_spectrogram(signal: torch.Tensor, window: torch.Tensor, filterbank: torch.Tensor,
                             hop: float, peak_normalize: bool = False,
                             fft_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Log-filtered magnitude spectrogram of a batch of equal-length signals.

    Parameters
    ----------
    signal : torch.Tensor
        ``(..., L)`` float signal(s), madmom-normalised (:func:`madmom_normalize`) unless ``peak_normalize``.
    window, filterbank : torch.Tensor
        ``(frame_size,)`` window (symmetric Hann) and ``(frame_size // 2, bands)`` filterbank.
    hop : float
        Hop size in samples (``22050 / 31.3`` for the reference).
    peak_normalize : bool
        Divide every signal by its peak first (differentiable; no int16 cast).
    fft_dtype : torch.dtype, optional
        Precision of windowing and FFT (madmom: float64); ``None`` keeps the input's dtype.

    Returns
    -------
    torch.Tensor
        ``(..., frames, bands)`` with ``frames = ceil(L / hop)``.
    """
    if signal.ndim < 1 or signal.shape[-1] == 0:
        raise MerError(f"signal must have shape (..., samples) with samples > 0, got {tuple(signal.shape)}")
    if peak_normalize:
        signal = signal / signal.abs().amax(dim=-1, keepdim=True)
    frame_size = window.shape[-1]
    length = signal.shape[-1]
    starts = torch.as_tensor(frame_starts(length, hop), device=signal.device)
    index = starts[:, None] + torch.arange(frame_size, device=signal.device)[None, :]
    padded = nn.functional.pad(signal, (0, int(index[-1, -1]) + 1 - length))
    work_dtype = fft_dtype or signal.dtype
    frames = padded[..., index].to(work_dtype) * window.to(work_dtype)
    spectrum = torch.fft.rfft(frames, n=frame_size, dim=-1)[..., : frame_size // 2]
    magnitude = spectrum.abs().to(signal.dtype)
    filtered = magnitude @ filterbank.to(magnitude.dtype)
    return torch.log1p(filtered) / math.log(10.0)


class LogFilteredSpectrogram(nn.Module):
    """madmom's ``LogarithmicFilteredSpectrogram`` as a module; window and filterbank are (non-persistent) buffers.

    Parameters
    ----------
    sample_rate, fps, frame_size, bands_per_octave, fmin, fmax, fref
        Front-end parameters; the hop ``sample_rate / fps`` is not an integer.
    peak_normalize : bool
        Divide each input signal by its peak first (differentiable).
    fft_dtype : torch.dtype, optional
        Precision of windowing and FFT: ``torch.float64`` (default) follows madmom, ``None`` uses the input's dtype.

    Examples
    --------
    >>> spec = LogFilteredSpectrogram()(torch.randn(2, 22050))     # (2, 32, 149)
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, fps: float = FPS, frame_size: int = FRAME_SIZE,
                 bands_per_octave: int = BANDS_PER_OCTAVE, fmin: float = FMIN, fmax: float = FMAX,
                 fref: float = FREF, peak_normalize: bool = False,
                 fft_dtype: torch.dtype | None = torch.float64) -> None:
        super().__init__()
        self.fft_dtype = fft_dtype
        self.sample_rate = sample_rate
        self.hop = sample_rate / fps
        self.peak_normalize = peak_normalize
        window = torch.from_numpy(np.hanning(frame_size))  # symmetric Hann, float64
        fb = torch.from_numpy(log_filterbank(sample_rate, frame_size, bands_per_octave, fmin, fmax, fref))
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("filterbank", fb, persistent=False)

    @property
    def num_bands(self) -> int:
        """Number of output bands (149 for the reference parameters)."""
        return int(self.filterbank.shape[1])

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        """``(..., samples)`` -> ``(..., frames, bands)``."""
        return log_filtered_spectrogram(signal, self.window, self.filterbank, self.hop, self.peak_normalize,
                                        self.fft_dtype)


def spectrogram_from_file(path: str | os.PathLike, frontend: LogFilteredSpectrogram | None = None) -> np.ndarray:
    """The reference's spectrogram of one audio file, ``(frames, 149)`` float32, computed without a graph.

    A :class:`MerError` names the file if it is missing, undecodable, or empty or silent at 16-bit resolution.
    """
    frontend = frontend or LogFilteredSpectrogram()
    try:
        signal = madmom_normalize(read_audio_int16(path, frontend.sample_rate))
    except MerError as exc:
        if str(Path(path)) in str(exc):
            raise
        raise MerError(f"{path}: {exc}") from exc
    device = frontend.filterbank.device
    with torch.no_grad():
        spec = frontend(torch.from_numpy(signal).to(device))
    return spec.cpu().numpy().astype(np.float32)
