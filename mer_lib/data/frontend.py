"""The front end: madmom's log-filtered spectrogram, in PyTorch (protocol §3).

The reference feeds its CNN with madmom 0.16.1's
``LogarithmicFilteredSpectrogram``. This module rebuilds that chain so that it
is differentiable end to end, batched, and runs on CPU or GPU:

1. :func:`read_audio_int16` reads a file as 16-bit integers at 22050 Hz, as
   madmom's loader does.
2. :func:`madmom_normalize` applies madmom's ``norm=True`` on int16 data
   (division by ``max|x| / 32767`` followed by a *truncating* cast) and
   ``np.trim_zeros``, and returns the float signal ``x16 / 32767``.
3. :class:`LogFilteredSpectrogram` frames the signal with the non-integer hop
   ``22050 / 31.3`` (frame ``i`` starts at sample ``int(i * hop)``, frames past
   the end are zero-padded), applies the symmetric Hann window, takes the
   magnitude of bins 0..1023 of a 2048-point FFT, applies the 149-band
   logarithmic filterbank (:func:`log_filterbank`) and returns
   ``log10(1 + x)``.

``torch.stft`` cannot be used: it needs an integer hop. Frames are gathered
with an index matrix instead, which keeps the whole chain differentiable with
respect to the waveform (used by waveform attacks).

The implementation is tested against madmom's own output in
``reference/madmom`` (shipped with the repository): the filterbank is identical (the test
allows 1e-7), the spectrograms agree within 5e-7 (the test allows 1e-5).
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
    """Centre frequencies (Hz) of the ``frame_size // 2`` kept FFT bins.

    Bin ``k`` is at ``k * sample_rate / frame_size``; the Nyquist bin is not
    included (madmom's ``include_nyquist=False``).
    """
    return np.arange(frame_size // 2, dtype=np.float64) * sample_rate / frame_size


def log_frequencies(bands_per_octave: int = BANDS_PER_OCTAVE, fmin: float = FMIN, fmax: float = FMAX,
                    fref: float = FREF) -> np.ndarray:
    """Nominal band frequencies ``fref * 2**(k / bands_per_octave)`` within ``[fmin, fmax]``.

    ``k`` runs from ``floor(bpo * log2(fmin / fref))`` up to, but excluding,
    ``ceil(bpo * log2(fmax / fref))``; values outside ``[fmin, fmax]`` are
    dropped. For the reference parameters this gives 232 frequencies.
    """
    lo = math.floor(math.log2(fmin / fref) * bands_per_octave)
    hi = math.ceil(math.log2(fmax / fref) * bands_per_octave)
    freqs = fref * 2.0 ** (np.arange(lo, hi, dtype=np.float64) / bands_per_octave)
    return freqs[(freqs >= fmin) & (freqs <= fmax)]


def frequencies_to_bins(frequencies: np.ndarray, bin_frequencies: np.ndarray) -> np.ndarray:
    """Index of the nearest FFT bin for every frequency (an exact tie goes up).

    Frequencies above the last bin map to the last bin.
    """
    upper = np.clip(np.searchsorted(bin_frequencies, frequencies), 1, len(bin_frequencies) - 1)
    dist_lower = frequencies - bin_frequencies[upper - 1]
    dist_upper = bin_frequencies[upper] - frequencies
    return upper - (dist_lower < dist_upper).astype(upper.dtype)


def triangular_filterbank(bins: np.ndarray, num_fft_bins: int) -> np.ndarray:
    """Area-normalised triangular filters on consecutive distinct bins.

    Every run of three consecutive entries ``(start, peak, stop)`` of the
    sorted unique ``bins`` makes one band: weights rise linearly from 0 at
    ``start`` to 1 at ``peak`` and fall back towards 0 at ``stop`` (both ends
    excluded from the support), are cast to float32 and divided by their sum.

    Returns
    -------
    np.ndarray
        ``(num_fft_bins, len(bins) - 2)`` float32 matrix (FFT bins x bands).
    """
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
    """madmom's ``LogarithmicFilterbank`` (unique, area-normalised filters).

    Returns
    -------
    np.ndarray
        ``(frame_size // 2, bands)`` float32 matrix; 1024 x 149 for the
        reference parameters, so that ``spec = magnitude @ filterbank``.
    """
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
    """Read an audio file as mono int16 at ``sample_rate``, as madmom does.

    A file already at ``sample_rate`` is decoded straight to int16 by
    soundfile (bit-exact for 16-bit WAV/FLAC). Multi-channel audio is averaged
    and truncated back to int16 (madmom's ``num_channels=1``). A file at
    another rate is decoded to float, resampled with librosa (soxr) and
    rounded to int16; madmom would call ffmpeg here, so that path, and MP3
    decoding in general, agrees with the reference only up to the decoders'
    differences.

    Raises
    ------
    MerError
        If the file is missing or cannot be decoded, or (on the resampling
        path, which decodes to float) holds non-finite samples. A float file
        read straight to int16 cannot show NaN here: the loader's audio checks
        (:func:`mer_lib.data.loader.load_soundtracks`) refuse such files.
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
    """madmom's ``norm=True`` on int16 data, then ``trim_zeros``, as float32.

    The signal is divided by ``max|x| / 32767`` and truncated toward zero back
    to integers; exact zeros at both ends are removed; the result is returned
    as ``x / 32767`` in float32 (madmom divides its window by 32767 for int16
    data, which is the same thing).

    Parameters
    ----------
    x16 : np.ndarray
        Mono int16 signal.
    trim : bool
        Remove leading/trailing exact zeros (madmom's ``np.trim_zeros``).

    Raises
    ------
    MerError
        If the signal is empty or all zeros.
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
        ``(..., L)`` float signal(s), already madmom-normalised and trimmed
        (see :func:`madmom_normalize`), or raw if ``peak_normalize``.
    window : torch.Tensor
        ``(frame_size,)`` analysis window (symmetric Hann for the reference).
    filterbank : torch.Tensor
        ``(frame_size // 2, bands)`` filterbank matrix.
    hop : float
        Hop size in samples (``22050 / 31.3`` for the reference).
    peak_normalize : bool
        Divide every signal by its maximum absolute value first
        (differentiable; madmom's float normalisation, without the int16 cast).
    fft_dtype : torch.dtype, optional
        Precision of the windowing and FFT (madmom uses float64 there and
        float32 afterwards). ``None`` keeps the input's dtype. With float32
        throughout, the result differs from madmom's by up to ~6e-6; with a
        float64 FFT by ~4e-7.

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
    """madmom's ``LogarithmicFilteredSpectrogram`` as a PyTorch module.

    Holds the window and the filterbank as buffers (moved with ``.to(device)``).

    Parameters
    ----------
    sample_rate : int
        Sampling rate of the input signal.
    fps : float
        Frames per second; the hop is ``sample_rate / fps`` (not an integer).
    frame_size : int
        Frame and FFT length.
    bands_per_octave, fmin, fmax, fref
        Filterbank parameters (see :func:`log_filterbank`).
    peak_normalize : bool
        Divide each input signal by its peak first (differentiable).
    fft_dtype : torch.dtype, optional
        Precision of windowing and FFT; ``torch.float64`` (the default) follows
        madmom, ``None`` computes in the input's dtype (faster, e.g. on a GPU).

    Examples
    --------
    >>> frontend = LogFilteredSpectrogram()
    >>> spec = frontend(torch.randn(2, 22050))     # (2, 32, 149)
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
    """The reference's spectrogram of one audio file, ``(frames, 149)`` float32.

    Reads the file as int16 (:func:`read_audio_int16`), applies madmom's
    normalisation and zero trimming (:func:`madmom_normalize`) and the
    front end, without building a graph.

    Raises
    ------
    MerError
        Naming the file, if it is missing, cannot be decoded, or is empty or
        silent once read as 16-bit integers.
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
