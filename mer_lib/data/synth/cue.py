"""A faint production cue for the mechanism world (protocol §2.3): narrow-band noise whose level tracks an emotion.

The cue is no part of the music and of no mid-level annotation. The emotion's latent is ``y = s + n``: ``s`` what the
controls explain (variance ``R^2``), ``n`` what they do not (:func:`mer_lib.data.synth.model.emotion_latents`). The
cue latent is ``c = cos(t) s / sqrt(R^2) + sin(t) n / sqrt(1 - R^2)`` with ``t = atan2(sqrt(1 - R^2), sqrt(R^2)) +
arccos(tracking)``: it correlates ``tracking`` with ``y`` and, leaning on ``n`` as far as that allows, tells a model
what the music cannot (with the controls it gives ``n`` exactly). Its RMS level relative to the music's is ``lo + (hi - lo) * Phi(c)`` dB (:attr:`CueConfig.level_db`), so it
always stays at least ``-hi`` dB below the music. :func:`write_cue_world` adds it to every file of a synthetic
dataset in int16 samples, so that :func:`remove_cue` restores the original audio exactly.
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torchaudio.functional as taf
from scipy.special import ndtr

from mer_lib import artifacts
from mer_lib.config import EMOTIONS, check_choice
from mer_lib.data.layout import TEXT_FILES, audio_folder, controls_path, generator_path, synthetic_audio_path
from mer_lib.data.synth.model import CONTROLS, EMOTION_RATING, emotion_latents, explained_latents
from mer_lib.errors import MerError
from mer_lib.progress import progress_bar

#: Sub-stream of ``default_rng([config.seed, number, stream])`` that draws the cue's samples.
NOISE_STREAM = 2

#: Bumped whenever a code change alters the cue world's files; part of its record.
CUE_VERSION = 2

#: The cue world's table (one row per excerpt) and its marker (configuration and checksums, written last).
CUE_TABLE, CUE_MARKER = "cue.csv", "cue.json"

#: int16 full scale.
_INT16 = 32767


@dataclasses.dataclass(frozen=True)
class CueConfig:
    """Settings of the cue (fixed before any model sees it; notebook 10 states the criteria they meet).

    Attributes
    ----------
    emotion : str
        The emotion whose latent the cue level tracks.
    tracking : float
        Correlation of the cue latent with the emotion latent, in [0, 1].
    band_hz : tuple of float
        Pass band of the noise (Hz).
    level_db : tuple of float
        RMS level of the cue relative to the music at cue latents -inf and +inf (dB, both negative).
    seed : int
        Seed of the cue's noise.
    """

    emotion: str = "tension"
    tracking: float = 0.5
    band_hz: tuple[float, float] = (7500.0, 8500.0)
    level_db: tuple[float, float] = (-56.0, -36.0)
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("CueConfig.emotion", self.emotion, EMOTIONS)
        if not (isinstance(self.tracking, (int, float)) and 0.0 <= self.tracking <= 1.0):
            raise MerError(f"CueConfig.tracking must be in [0, 1], got {self.tracking!r}")
        lo, hi = self.band_hz
        if not (0.0 < lo < hi):
            raise MerError(f"CueConfig.band_hz must be (low, high) with 0 < low < high, got {self.band_hz!r}")
        lo, hi = self.level_db
        if not (lo < hi < 0.0):
            raise MerError(f"CueConfig.level_db must be (low, high) with low < high < 0 dB, got {self.level_db!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise MerError(f"CueConfig.seed must be a non-negative integer, got {self.seed!r}")


def cue_angle(config: CueConfig) -> float:
    """The angle ``t`` of the cue latent between the explained and the unexplained part of its emotion (radians)."""
    r2 = EMOTION_RATING[config.emotion][0]
    return math.atan2(math.sqrt(1.0 - r2), math.sqrt(r2)) + math.acos(float(config.tracking))


def cue_latent(latents: pd.DataFrame, explained: pd.DataFrame, config: CueConfig) -> pd.Series:
    """The cue latent of every excerpt from the emotion latents and their explained parts, indexed like ``latents``."""
    r2, t = EMOTION_RATING[config.emotion][0], cue_angle(config)
    s = explained[config.emotion].to_numpy(np.float64)
    n = latents[config.emotion].to_numpy(np.float64) - s
    return pd.Series(math.cos(t) * s / math.sqrt(r2) + math.sin(t) * n / math.sqrt(1.0 - r2), index=latents.index,
                     name="cue_latent")


def cue_level_db(latent: np.ndarray | pd.Series, config: CueConfig) -> np.ndarray:
    """RMS level of the cue relative to the music, in dB, from its latent."""
    lo, hi = config.level_db
    return lo + (hi - lo) * ndtr(np.asarray(latent, np.float64))


def cue_noise(number: int, n_samples: int, sample_rate: int, config: CueConfig) -> np.ndarray:
    """Unit-RMS Gaussian noise of excerpt ``number`` band-limited to ``config.band_hz`` (deterministic), float64."""
    if config.band_hz[1] >= sample_rate / 2:
        raise MerError(f"CueConfig.band_hz {config.band_hz} must lie below the Nyquist frequency {sample_rate / 2}")
    white = np.random.default_rng([config.seed, int(number), NOISE_STREAM]).standard_normal(int(n_samples))
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(int(n_samples), 1.0 / sample_rate)
    spectrum[(freqs < config.band_hz[0]) | (freqs > config.band_hz[1])] = 0.0
    band = np.fft.irfft(spectrum, int(n_samples))
    return band / math.sqrt(float(np.mean(band ** 2)))


def cue_samples(number: int, n_samples: int, sample_rate: int, rms: float, config: CueConfig) -> np.ndarray:
    """The cue of excerpt ``number`` as int16 samples of RMS ``rms`` (int16 units, before rounding)."""
    return np.round(cue_noise(number, n_samples, sample_rate, config) * float(rms)).astype(np.int16)


def add_cue(music: np.ndarray, cue: np.ndarray) -> np.ndarray:
    """``music + cue`` in int16 (:class:`MerError` if a sample would clip: then the sum could not be undone)."""
    total = np.asarray(music, np.int32) + np.asarray(cue, np.int32)
    if total.max(initial=0) > _INT16 or total.min(initial=0) < -_INT16 - 1:
        raise MerError("add_cue: the cue would clip the audio; lower CueConfig.level_db")
    return total.astype(np.int16)


def remove_cue(world: np.ndarray, cue: np.ndarray) -> np.ndarray:
    """The audio without the cue: ``world - cue`` in int16, exactly the samples :func:`add_cue` started from."""
    return (np.asarray(world, np.int32) - np.asarray(cue, np.int32)).astype(np.int16)


def _loudness(x: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (ITU-R BS.1770) of a float signal in LUFS, after raising it to -20 dBFS RMS and back.

    The gain keeps a faint cue above the absolute gate (-70 LUFS); it is removed again from the result.
    """
    rms = math.sqrt(float(np.mean(np.asarray(x, np.float64) ** 2)))
    if rms == 0.0:
        return -math.inf
    gain = 0.1 / rms
    value = float(taf.loudness(torch.as_tensor(x * gain, dtype=torch.float64)[None], sample_rate))
    return value - 20.0 * math.log10(gain)


def _wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _source_seed(source_dir: Path) -> int:
    marker = generator_path(source_dir)
    if not marker.exists():
        raise MerError(f"{source_dir}: not a finished synthetic dataset ({marker} missing); the cue needs its "
                       "ground truth (generate it first, notebook 01)")
    return int(artifacts.read_json(marker)["config"]["seed"])


def write_cue_world(source_dir: str | os.PathLike, out_dir: str | os.PathLike, config: CueConfig,
                    progress: bool = True) -> pd.DataFrame:
    """The synthetic dataset of ``source_dir`` with the cue added to every audio file, written to ``out_dir``.

    The ratings and annotations are copied unchanged; ``cue.csv`` holds per excerpt ``cue_latent``, the target and
    achieved ``level_db`` (cue RMS over music RMS), ``rms`` (int16 units: :func:`cue_samples` regenerates the cue)
    and ``loudness_lu`` (BS.1770 loudness of the cue minus the music's). Reused when ``cue.json`` records the same
    configuration and source.

    Returns
    -------
    pandas.DataFrame
        The contents of ``cue.csv``, indexed by ``number``.
    """
    source, out = Path(source_dir), Path(out_dir)
    seed = _source_seed(source)
    record = {"cue_version": CUE_VERSION, "cue": dataclasses.asdict(config), "source_generator": artifacts.file_sha256(generator_path(source))}
    marker = out / CUE_MARKER
    if marker.exists() and artifacts.read_json(marker).get("config") == artifacts.to_jsonable(record):
        return pd.read_csv(out / CUE_TABLE, index_col="number")
    marker.unlink(missing_ok=True)
    controls = pd.read_csv(controls_path(source), index_col="number")[list(CONTROLS)]
    latent = cue_latent(emotion_latents(controls, seed), explained_latents(controls), config)
    target = cue_level_db(latent, config)
    def one(item: tuple[int, float, float]) -> dict:
        number, c, level = item
        music, rate = sf.read(source / synthetic_audio_path(number), dtype="int16")
        rms = round(math.sqrt(float(np.mean(music.astype(np.float64) ** 2))) * 10.0 ** (level / 20.0), 6)
        cue = cue_samples(number, len(music), rate, rms, config)
        artifacts.write_bytes(out / synthetic_audio_path(number), _wav_bytes(add_cue(music, cue), rate))
        m, q = music.astype(np.float64) / _INT16, cue.astype(np.float64) / _INT16
        return {"number": number, "cue_latent": float(c), "target_level_db": float(level), "rms": rms,
                "level_db": 20.0 * math.log10(math.sqrt(np.mean(q ** 2)) / math.sqrt(np.mean(m ** 2))),
                "loudness_lu": _loudness(q, rate) - _loudness(m, rate)}

    items = [(int(n), float(c), float(level)) for n, c, level in zip(controls.index, latent, target)]
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:  # numpy, soundfile and torch release the GIL
        rows = list(progress_bar(pool.map(one, items), total=len(items), desc="cue world", enabled=progress,
                                 unit="file"))
    for name in TEXT_FILES:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        artifacts.write_bytes(out / name, (source / name).read_bytes())
    table = pd.DataFrame(rows).set_index("number")
    artifacts.write_text(out / CUE_TABLE, table.to_csv(float_format="%.6f"))
    files = sorted(p.relative_to(out).as_posix() for p in audio_folder(out).glob("*.wav"))
    artifacts.write_json(marker, {"config": record, "files": {f: artifacts.file_sha256(out / f) for f in files}})
    return pd.read_csv(out / CUE_TABLE, index_col="number")


__all__ = ["CUE_MARKER", "CUE_TABLE", "CueConfig", "add_cue", "cue_angle", "cue_latent", "cue_level_db", "cue_noise",
           "cue_samples", "remove_cue", "write_cue_world"]
