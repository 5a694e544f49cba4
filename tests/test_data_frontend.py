"""The front end against madmom 0.16.1's own output (reference/madmom)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from mer_lib import config
from mer_lib.data import frontend
from mer_lib.errors import MerError


def _reference_signal(madmom_ref, name: str) -> np.ndarray:
    """The test signal normalised exactly as madmom does (int16 truncation)."""
    x16, sr = sf.read(madmom_ref / f"{name}.wav", dtype="int16")
    assert sr == 22050
    return frontend.madmom_normalize(x16)


def test_filterbank_matches_madmom(madmom_ref):
    ref = np.load(madmom_ref / "filterbank.npy")
    fb = frontend.log_filterbank()
    assert fb.shape == ref.shape == (1024, config.NUM_BANDS)
    assert fb.dtype == np.float32
    assert np.abs(fb - ref).max() < 1e-7


def test_filterbank_band_table(madmom_ref):
    import pandas as pd

    bands = pd.read_csv(madmom_ref / "bands.csv")
    fb = frontend.log_filterbank()
    nz = [np.flatnonzero(fb[:, b]) for b in range(fb.shape[1])]
    assert [int(n[0]) for n in nz] == bands["low_nonzero_bin"].tolist()
    assert [int(n[-1]) for n in nz] == bands["high_nonzero_bin"].tolist()
    assert np.argmax(fb, axis=0).tolist() == bands["peak_bin"].tolist()
    np.testing.assert_allclose(fb.sum(axis=0), 1.0, atol=1e-6)
    meta = json.loads((madmom_ref / "meta.json").read_text())
    assert len(frontend.log_frequencies()) == meta["log_frequencies_nominal_count"]


def test_bin_frequencies(madmom_ref):
    import pandas as pd

    ref = pd.read_csv(madmom_ref / "fft_bin_frequencies.csv")["frequency_hz"].to_numpy()
    np.testing.assert_allclose(frontend.fft_bin_frequencies(), ref, rtol=0, atol=1e-9)


def test_frame_starts_truncate_the_float_hop():
    hop = 22050 / 31.3
    starts = frontend.frame_starts(66149, hop)
    assert len(starts) == 94 == frontend.num_frames(66149, hop)
    assert starts[:6].tolist() == [0, 704, 1408, 2113, 2817, 3522]
    assert starts[93] == 65515
    assert frontend.num_frames(44100, hop) == 63


@pytest.mark.parametrize("name", ["sweep", "triad"])
def test_spectrogram_matches_madmom(madmom_ref, name):
    ref = np.load(madmom_ref / f"spec_{name}.npy")
    out = frontend.LogFilteredSpectrogram()(torch.from_numpy(_reference_signal(madmom_ref, name))).numpy()
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    # the float32-only path (fast, GPU friendly) also stays within the tolerance
    fast = frontend.LogFilteredSpectrogram(fft_dtype=None)(torch.from_numpy(_reference_signal(madmom_ref, name)))
    np.testing.assert_allclose(fast.numpy(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["sweep", "triad"])
def test_spectrogram_from_file_matches_madmom(madmom_ref, name):
    meta = json.loads((madmom_ref / "meta.json").read_text())["signals"][name]
    ref = np.load(madmom_ref / f"spec_{name}.npy")
    out = frontend.spectrogram_from_file(madmom_ref / f"{name}.wav")
    assert out.shape[0] == meta["num_frames"]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)


def test_normalisation_truncates_and_trims(madmom_ref):
    x16, _ = sf.read(madmom_ref / "triad.wav", dtype="int16")
    y = frontend.madmom_normalize(x16)
    meta = json.loads((madmom_ref / "meta.json").read_text())["signals"]["triad"]
    assert len(y) == meta["num_samples_after_trim"]
    assert np.abs(y).max() == pytest.approx(1.0)
    # truncation toward zero: every value is an integer multiple of 1/32767
    np.testing.assert_allclose(y * 32767, np.round(y * 32767), atol=1e-3)
    with pytest.raises(MerError, match="silent"):
        frontend.madmom_normalize(np.zeros(100, dtype=np.int16))


def test_negative_control_fails(madmom_ref):
    """Without madmom's normalisation the result is far off: the test can fail."""
    x16, _ = sf.read(madmom_ref / "sweep.wav", dtype="int16")
    x = torch.from_numpy(np.trim_zeros(x16 / 32768.0).astype(np.float32))
    out = frontend.LogFilteredSpectrogram()(x).numpy()
    assert np.abs(out - np.load(madmom_ref / "spec_sweep.npy")).max() > 0.1


def test_gradcheck_float64():
    torch.manual_seed(0)
    spec = frontend.LogFilteredSpectrogram(frame_size=64, fps=22050 / 23.7, fmin=400, fmax=11000,
                                        bands_per_octave=3)
    x = torch.randn(2, 150, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(spec, (x,), eps=1e-6, atol=1e-5)


def test_gradcheck_full_size_short_signal():
    """The reference configuration itself, on a 0.1-s signal."""
    spec = frontend.LogFilteredSpectrogram()
    gen = torch.Generator().manual_seed(1)
    x = (0.3 * torch.randn(2205, generator=gen, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(spec, (x,), eps=1e-6, atol=1e-4, nondet_tol=0.0,
                                    fast_mode=True)


def test_peak_normalize_is_differentiable_and_scale_free():
    spec = frontend.LogFilteredSpectrogram(peak_normalize=True)
    x = torch.randn(4000, dtype=torch.float64)
    np.testing.assert_allclose(spec(x).numpy(), spec(3.0 * x).numpy(), atol=1e-12)
    x.requires_grad_(True)
    spec(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_batch_equals_one_at_a_time():
    spec = frontend.LogFilteredSpectrogram()
    gen = torch.Generator().manual_seed(3)
    batch = torch.rand(3, 2, 30000, generator=gen) * 2 - 1
    out = spec(batch)
    assert out.shape == (3, 2, frontend.num_frames(30000, spec.hop), 149)
    for i in range(3):
        for j in range(2):
            torch.testing.assert_close(out[i, j], spec(batch[i, j]), rtol=0, atol=1e-6)


def test_unreadable_audio_raises(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(MerError, match="bad.wav"):
        frontend.read_audio_int16(bad)
    with pytest.raises(MerError, match="not found"):
        frontend.read_audio_int16(tmp_path / "missing.wav")


def test_resampled_and_stereo_input(tmp_path):
    t = np.arange(44100) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "s.wav", np.stack([tone, tone], axis=1), 44100, subtype="PCM_16")
    x16 = frontend.read_audio_int16(tmp_path / "s.wav")
    assert x16.dtype == np.int16 and abs(len(x16) - 22050) <= 1
    spec = frontend.spectrogram_from_file(tmp_path / "s.wav")
    band_of_440 = np.argmax(frontend.log_filterbank()[round(440 * 2048 / 22050)])
    assert np.argmax(spec[10]) in (band_of_440 - 1, band_of_440, band_of_440 + 1)


def test_silent_file_is_named(tmp_path):
    sf.write(tmp_path / "quiet.wav", np.zeros(22050), 22050, subtype="PCM_16")
    with pytest.raises(MerError) as info:
        frontend.spectrogram_from_file(tmp_path / "quiet.wav")
    assert str(info.value) == f"{tmp_path / 'quiet.wav'}: the audio signal is empty or silent (all samples are zero)"


def test_unreadable_file_is_named_once(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF")
    with pytest.raises(MerError) as info:
        frontend.spectrogram_from_file(tmp_path / "bad.wav")
    assert str(info.value).startswith(f"{tmp_path / 'bad.wav'}: cannot decode audio")  # not prefixed twice


def test_non_finite_samples_are_refused_when_resampling(tmp_path):
    x = 0.1 * np.ones(44100)
    x[10] = np.nan
    sf.write(tmp_path / "nan.wav", x, 44100, subtype="FLOAT")
    with pytest.raises(MerError, match=r"nan\.wav: the audio holds non-finite samples"):
        frontend.read_audio_int16(tmp_path / "nan.wav")
