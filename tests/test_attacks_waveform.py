"""Waveform attacks: the audio behind an excerpt, the differentiable chain, budgets, attack, noise, 16-bit round trip.

Everything runs on a tiny smoke-profile synthetic dataset (8 excerpts of 9-11 s, prepared once per module)
and a randomly initialised narrow model.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from mer_lib.attacks import waveform as wf
from mer_lib.config import EMOTIONS, get_profile
from mer_lib.data.frontend import frame_starts, madmom_normalize, read_audio_int16
from mer_lib.data.stage import prepare_data
from mer_lib.errors import MerError
from mer_lib.models.nets import build_model

SMOKE = get_profile("smoke")
TINY = dataclasses.replace(SMOKE, data=dataclasses.replace(SMOKE.data, n_excerpts=8))

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_data(TINY, tmp_path_factory.mktemp("waveform") / "run", progress=False)


@pytest.fixture(scope="module")
def usable(prepared) -> list[int]:
    """Excerpts of files at least as long as the excerpt (the others were wrap-padded)."""
    frames = prepared.table["frames"]
    return [int(n) for n in prepared.table.index if frames[n] >= prepared.excerpt_frames]


@pytest.fixture(scope="module")
def fe32():
    return wf.attack_frontend(TINY.features, None)


@pytest.fixture(scope="module")
def fe64():
    return wf.attack_frontend(TINY.features, torch.float64)


@pytest.fixture(scope="module")
def batch(prepared, usable, fe32) -> wf.SegmentBatch:
    return wf.stack_segments([wf.excerpt_audio(prepared, n, fe32) for n in usable[:3]])


@pytest.fixture(scope="module")
def labels(prepared, batch) -> np.ndarray:
    return prepared.table.loc[list(batch.numbers), list(EMOTIONS)].to_numpy(np.float32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("A2M2E", 0.0625).eval()


def attack(model, batch, labels, prepared, fe, budget, steps=4, **kw):
    return wf.waveform_attack(model, batch, labels, fe, prepared.mean, prepared.std, budget, steps, **kw)


# --------------------------------------------------------------------------- the audio behind an excerpt
def test_the_dataset_has_both_kinds_of_excerpt(prepared, usable):
    assert 3 <= len(usable) < len(prepared.table)  # some files are shorter than the excerpt, some are not
    assert any(int(prepared.table.at[n, "offset"]) > 0 for n in usable)


def test_segment_excerpt_matches_the_prepared_excerpt(prepared, usable, fe32, fe64):
    items = [wf.excerpt_audio(prepared, n, fe64) for n in usable]
    b = wf.stack_segments(items)
    expected = prepared.excerpts(usable)
    exact = wf.segment_excerpt(b.signal, b.starts, fe64, prepared.mean, prepared.std).numpy()
    fast = wf.segment_excerpt(b.signal, b.starts, fe32, prepared.mean, prepared.std).numpy()
    assert exact.shape == fast.shape == expected.shape == (len(usable), 1, 313, 149)
    assert np.abs(exact - expected).max() <= 1e-5
    assert np.abs(fast - expected).max() <= 5e-5
    for a in items:  # the segment is the normalised signal's samples the frames read
        signal = madmom_normalize(read_audio_int16(a.audio_path))
        np.testing.assert_array_equal(a.signal, signal[a.start: a.start + len(a.signal)])
        assert a.starts[0] == 0 and len(a.starts) == 313
        np.testing.assert_array_equal(a.starts + a.start, frame_starts(len(signal), fe64.hop)[a.offset: a.offset + 313])


def test_frames_must_start_where_the_files_frames_start(prepared, usable, fe64):
    # the hop is not an integer: framing the cut segment from its own first sample misplaces frames
    number = next(n for n in usable if int(prepared.table.at[n, "offset"]) > 0)
    a = wf.excerpt_audio(prepared, number, fe64)
    naive = torch.as_tensor(frame_starts(len(a.signal), fe64.hop)[:313])[None]
    assert not np.array_equal(naive[0].numpy(), a.starts)
    signal = torch.from_numpy(a.signal)[None]
    padded = torch.nn.functional.pad(signal, (0, 4096))
    wrong = wf.segment_excerpt(padded, naive, fe64, prepared.mean, prepared.std).numpy()
    assert np.abs(wrong - prepared.excerpts([number])).max() > 1e-3


def test_wrap_padded_excerpts_are_refused_naming_the_file(prepared, usable):
    short = next(int(n) for n in prepared.table.index if int(n) not in usable)
    path = prepared.table.at[short, "audio_path"]
    with pytest.raises(MerError, match=rf"{path}: excerpt {short} has \d+ frames, fewer than the 313-frame excerpt.*"
                                       "wrapping"):
        wf.excerpt_audio(prepared, short)
    with pytest.raises(MerError, match="not in the prepared data"):
        wf.excerpt_audio(prepared, 999)


def test_chain_gradient_is_exact_and_matches_torch_autograd(fe64):
    # gradcheck of the custom backward (float64, irregular frame starts as at the hop 22050/31.3)
    starts = torch.tensor([[0, 704, 1408], [3, 707, 1412]])
    x = (0.1 * torch.randn(2, 1408 + 2048 + 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
         ).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: wf.segment_spectrogram(s, starts, fe64)[..., ::7], (x,),
                                    eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)
    # the same gradient through torch's own indexing and complex FFT backward
    weights = torch.randn(2, 3, 149, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (ours,) = torch.autograd.grad((wf.segment_spectrogram(x, starts, fe64) * weights).sum(), x)
    index = starts[:, :, None] + torch.arange(2048)
    frames = x[torch.arange(2)[:, None, None], index] * fe64.window
    mag = torch.fft.rfft(frames, dim=-1)[..., :1024].abs()
    reference = torch.log1p(mag @ fe64.filterbank.double()) / math.log(10.0)
    (theirs,) = torch.autograd.grad((reference * weights).sum(), x)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


def test_a_batch_gives_each_segment_its_own_excerpt(prepared, batch, fe32):
    together = wf.segment_excerpt(batch.signal, batch.starts, fe32, prepared.mean, prepared.std)
    for i, n in enumerate(batch.numbers):
        alone = wf.stack_segments([wf.excerpt_audio(prepared, n, fe32)])
        torch.testing.assert_close(together[i], wf.segment_excerpt(alone.signal, alone.starts, fe32, prepared.mean,
                                                                   prepared.std)[0], rtol=0, atol=1e-6)
    mask = batch.mask()
    assert mask.dtype == torch.bool and mask.sum(dim=1).tolist() == batch.lengths.tolist()


# --------------------------------------------------------------------------- budgets and projections
def test_project_snr_lands_inside_keeps_inside_points_and_is_idempotent():
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(6, 1000, generator=gen) * torch.tensor([0.01, 0.1, 1.0, 10.0, 0.5, 0.0])[:, None]
    radius = torch.full((6,), 2.0, dtype=torch.float64)
    norms = delta.double().norm(dim=1)
    out = wf.project_snr(delta, radius)
    assert (out.double().norm(dim=1) <= radius).all()
    inside = norms <= 2.0
    assert torch.equal(out[inside], delta[inside])  # unchanged, bit for bit
    cos = (out.double() * delta.double()).sum(1)[~inside] / (out.double().norm(dim=1) * norms)[~inside]
    assert torch.allclose(cos, torch.ones_like(cos))  # scaled, not turned
    assert torch.allclose(out.double().norm(dim=1)[~inside], radius[~inside], rtol=1e-5)
    assert torch.equal(wf.project_snr(out, radius), out)  # idempotent
    assert torch.equal(wf.project_snr(delta, 0.0), torch.zeros_like(delta))
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(MerError, match="radii must be finite and non-negative"):
            wf.project_snr(delta, bad)


def test_projection_respects_every_constraint_at_once():
    gen = torch.Generator().manual_seed(1)
    clean = torch.rand(3, 500, generator=gen) * 1.8 - 0.9
    clean[:, :10] = 1.0  # samples at full scale
    delta = torch.randn(3, 500, generator=gen)
    mask = torch.arange(500)[None] < torch.tensor([[500], [450], [300]])
    radius = wf.snr_radius(clean * mask, 20.0)
    out = wf.project_perturbation(delta, clean, mask, radius, linf=3000)
    assert (out.abs() <= 3000 / 32767).all()
    assert ((clean + out).abs() <= 1.0 + 1e-6).all() and (out[:, :10] <= 0).all()
    assert (out[~mask] == 0).all()
    assert (out.double().norm(dim=1) <= radius).all()
    assert torch.allclose(torch.as_tensor(wf.achieved_snr_db(clean * mask, out)), torch.full((3,), 20.0,
                                                                                              dtype=torch.float64),
                          atol=1e-4)
    assert np.all(wf.linf_int16(out) <= 3000 + 1e-6)
    np.testing.assert_array_equal(wf.achieved_snr_db(clean, torch.zeros_like(clean)), np.inf)


@pytest.mark.parametrize("budget, message", [
    ({}, "needs snr_db"), ({"snr_db": math.inf}, "snr_db must be a finite"), ({"snr_db": math.nan}, "finite"),
    ({"snr_db": "30"}, "finite"), ({"snr_db": True}, "finite"), ({"linf": -1.0}, "linf must be a finite positive"),
    ({"linf": 0}, "positive"), ({"linf": math.inf}, "positive"), ({"snr_db": 30, "linf": math.nan}, "linf")])
def test_impossible_budgets_are_refused(budget, message):
    with pytest.raises(MerError, match=message):
        wf.Budget(**budget)


def test_bad_attack_arguments_are_refused(model, batch, labels, prepared, fe32):
    with pytest.raises(MerError, match="silent"):
        wf.snr_radius(torch.zeros(2, 10), 30.0)
    with pytest.raises(MerError, match="steps must be a positive integer"):
        attack(model, batch, labels, prepared, fe32, wf.Budget(snr_db=30), steps=0)
    with pytest.raises(MerError, match="update must be one of"):
        attack(model, batch, labels, prepared, fe32, wf.Budget(snr_db=30), update="adam")
    with pytest.raises(MerError, match="budget must be a Budget"):
        attack(model, batch, labels, prepared, fe32, 30.0)
    with pytest.raises(MerError, match="labels must have shape"):
        attack(model, batch, labels[:1], prepared, fe32, wf.Budget(snr_db=30))


def test_step_sizes_follow_the_budget():
    lengths = torch.tensor([100, 400])
    radius = torch.tensor([1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(wf.step_sizes("l2", 5, 2.5, radius, None, lengths), 2.5 * radius / 5)
    torch.testing.assert_close(wf.step_sizes("sign", 5, 2.5, radius, None, lengths),
                               2.5 * radius / lengths.double().sqrt() / 5)
    linf = wf.step_sizes("sign", 4, 2.0, None, 327.67, lengths)
    torch.testing.assert_close(linf, torch.full((2,), 2.0 * 0.01 / 4, dtype=torch.float64))
    both = wf.step_sizes("l2", 1, 1.0, radius, 327.67, lengths)  # L-inf ball reaches 0.01 sqrt(n) = 0.1, 0.2
    torch.testing.assert_close(both, torch.tensor([0.1, 0.2], dtype=torch.float64))


# --------------------------------------------------------------------------- the attack
def test_attack_stays_in_budget_and_reports_consistent_numbers(model, batch, labels, prepared, fe32):
    res = attack(model, batch, labels, prepared, fe32, wf.Budget(snr_db=30.0), steps=3)
    assert res.delta.shape == batch.signal.shape and (res.delta[~batch.mask()] == 0).all()
    torch.testing.assert_close(res.adversarial, batch.signal + res.delta, rtol=0, atol=0)
    assert (res.adversarial.abs() <= 1.0 + 1e-6).all()
    assert np.all(res.snr_db >= 30.0 - 1e-4) and np.all(res.snr_db < 30.1)  # on the ball's surface
    adv, _ = wf.predict_segments(model, batch, fe32, prepared.mean, prepared.std, res.delta)
    np.testing.assert_allclose(adv, res.adv_emotions, atol=1e-5)
    clean, bottleneck = wf.predict_segments(model, batch, fe32, prepared.mean, prepared.std)
    np.testing.assert_allclose(clean, res.clean_emotions, atol=1e-6)
    assert res.clean_bottleneck.shape == bottleneck.shape == (3, 7)
    dmae, change = wf.emotion_damage(clean, adv, labels)
    np.testing.assert_allclose(res.dmae, dmae, atol=1e-5)
    np.testing.assert_allclose(res.pred_change, change, atol=1e-5)
    assert np.all(res.pred_change >= np.abs(res.dmae) - 1e-9)
    assert (res.forward_passes, res.backward_passes) == (4 * 3, 3 * 3)
    again = attack(model, batch, labels, prepared, fe32, wf.Budget(snr_db=30.0), steps=3)
    assert torch.equal(again.delta, res.delta)  # deterministic


def test_emotion_damage_is_the_projects_dmae():
    true = np.full((1, 8), 0.5)
    clean = true + 0.1
    adv = true - 0.3
    dmae, change = wf.emotion_damage(clean, adv, true)
    np.testing.assert_allclose(dmae, [0.2])
    np.testing.assert_allclose(change, [0.4])


def test_damage_grows_with_the_budget(model, batch, labels, prepared, fe32):
    # independent attacks from zero (no warm start): more budget, more damage
    damage = [attack(model, batch, labels, prepared, fe32, wf.Budget(snr_db=snr), steps=5).dmae
              for snr in (50.0, 35.0, 20.0)]
    means = [float(np.mean(d)) for d in damage]
    assert means[0] < means[1] < means[2], means
    assert np.all(damage[0] < damage[2])
    # a warm start from the smaller budget's adversary never does worse in the objective
    weak = attack(model, batch, labels, prepared, fe32, wf.Budget(snr_db=35.0), steps=2)
    warm = attack(model, batch, labels, prepared, fe32, wf.Budget(snr_db=20.0), steps=2, init=weak.delta)
    mse = [np.mean((r.adv_emotions - labels) ** 2, axis=1) for r in (weak, warm)]
    assert np.all(mse[1] >= mse[0] - 1e-7)


def test_sign_steps_and_an_linf_budget(model, batch, labels, prepared, fe32):
    res = attack(model, batch, labels, prepared, fe32, wf.Budget(linf=64.0), steps=3, update="sign")
    assert np.all(res.linf <= 64.0 + 1e-6) and np.all(res.linf > 32.0)
    both = attack(model, batch, labels, prepared, fe32, wf.Budget(snr_db=40.0, linf=64.0), steps=3, update="sign")
    assert np.all(both.linf <= 64.0 + 1e-6) and np.all(both.snr_db >= 40.0 - 1e-4)
    assert np.all(res.dmae > 0) and np.all(both.dmae > 0)


# --------------------------------------------------------------------------- noise and loudness
def test_colored_noise_is_seeded_and_pink_falls_as_one_over_f():
    white = wf.colored_noise("white", 1 << 16, [0, 1])
    np.testing.assert_array_equal(white, wf.colored_noise("white", 1 << 16, [0, 1]))
    assert not np.array_equal(white, wf.colored_noise("white", 1 << 16, [0, 2]))
    pink = wf.colored_noise("pink", 1 << 16, [0, 1])
    for noise in (white, pink):
        assert noise.dtype == np.float32 and np.sqrt(np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(1, 1e-5)
    freqs = np.arange(1, 1 << 15)
    slopes = [np.polyfit(np.log(freqs), np.log(np.abs(np.fft.rfft(x)[1:1 << 15]) ** 2 + 1e-30), 1)[0]
              for x in (white, pink)]
    assert abs(slopes[0]) < 0.1 and abs(slopes[1] + 1.0) < 0.1
    with pytest.raises(MerError, match="noise kind"):
        wf.colored_noise("brown", 100, 0)


def test_noise_at_an_snr_and_its_loudness(batch):
    seeds = [[0, n] for n in batch.numbers]
    for kind in wf.NOISE_KINDS:
        noise = wf.noise_perturbation(batch, kind, 30.0, seeds)
        assert torch.equal(noise, wf.noise_perturbation(batch, kind, 30.0, seeds))
        assert (noise[~batch.mask()] == 0).all()
        np.testing.assert_allclose(wf.achieved_snr_db(batch.signal, noise), 30.0, atol=0.1)  # clipping: a hair above
        louder = wf.noise_perturbation(batch, kind, 20.0, seeds, wf.unit_noise(batch, kind, seeds))
        lu30 = wf.relative_loudness(batch.signal, noise, batch.lengths, 22050)
        lu20 = wf.relative_loudness(batch.signal, louder, batch.lengths, 22050)
        # 10 dB more noise is 10 LU louder, less what clipping at full scale removes from it
        shift = wf.achieved_snr_db(batch.signal, noise) - wf.achieved_snr_db(batch.signal, louder)
        assert np.all(shift > 9.5) and np.all(shift <= 10.0 + 1e-9)
        np.testing.assert_allclose(lu20 - lu30, shift, atol=0.3)
    lufs = wf.loudness_lufs(batch.signal, batch.lengths, 22050)
    scaled = wf.relative_loudness(batch.signal, batch.signal * 0.1, batch.lengths, 22050, lufs)
    np.testing.assert_allclose(scaled, -20.0, atol=1e-6)
    assert np.all(np.isneginf(wf.relative_loudness(batch.signal, torch.zeros_like(batch.signal), batch.lengths,
                                                   22050)))


def test_the_attack_beats_white_and_pink_noise_at_the_same_snr(model, batch, labels, prepared, fe32):
    res = attack(model, batch, labels, prepared, fe32, wf.Budget(snr_db=30.0), steps=4)
    for kind in wf.NOISE_KINDS:
        noise = wf.noise_perturbation(batch, kind, 30.0, [[0, n] for n in batch.numbers])
        adv, _ = wf.predict_segments(model, batch, fe32, prepared.mean, prepared.std, noise)
        dmae, change = wf.emotion_damage(res.clean_emotions, adv, labels)
        assert np.all(res.dmae > dmae + 0.01), (kind, res.dmae, dmae)
        assert np.all(res.pred_change > 3 * change), (kind, res.pred_change, change)


# --------------------------------------------------------------------------- the 16-bit round trip
@pytest.mark.parametrize("peak", [1, 257, 22937, 32767, 32768])
def test_int16_for_normalized_inverts_madmoms_normalisation(peak):
    x16 = np.random.default_rng(peak).integers(-peak, peak + 1, 5000).clip(-32768, 32767).astype(np.int16)
    x16[0] = -peak if peak == 32768 else peak
    normalized = np.trunc(x16 / (peak / 32767.0))
    w = wf.int16_for_normalized(normalized, peak)
    np.testing.assert_array_equal(np.trunc(w / (peak / 32767.0)), normalized)  # every reachable value exactly
    anywhere = np.arange(-32767, 32768, 97)
    back = np.trunc(wf.int16_for_normalized(anywhere, peak) / (peak / 32767.0))
    assert np.abs(back - anywhere).max() <= max(1.0, 32767.0 / peak)  # the grid's spacing
    with pytest.raises(MerError, match="peak"):
        wf.int16_for_normalized(anywhere, 0)


def test_16_bit_round_trip_is_exact_when_clean_and_keeps_the_attack(model, batch, labels, prepared, fe32, fe64,
                                                                     tmp_path):
    audios = [wf.excerpt_audio(prepared, n, fe64) for n in batch.numbers]
    res = attack(model, batch, labels, prepared, fe32, wf.Budget(snr_db=30.0), steps=3)
    for i, a in enumerate(audios):
        clean = wf.roundtrip_excerpt(a, batch.signal[i], tmp_path / f"clean{i}.wav", fe64, prepared.mean,
                                     prepared.std, 313)
        np.testing.assert_array_equal(clean.excerpt, prepared.excerpts([a.number]))
        assert clean.peak_preserved and clean.max_error == 0.0
        info = sf.info(str(clean.path))
        assert info.subtype == "PCM_16" and info.frames == len(read_audio_int16(a.audio_path))
        adv = wf.roundtrip_excerpt(a, batch.signal[i] + res.delta[i], tmp_path / f"adv{i}.wav", fe64, prepared.mean,
                                   prepared.std, 313)
        assert adv.max_error <= 2.0 or not adv.peak_preserved  # quantisation: about one step of the int16 grid
        with torch.no_grad():
            back = model(torch.from_numpy(adv.excerpt)).emotions.numpy()
            base = model(torch.from_numpy(prepared.excerpts([a.number]))).emotions.numpy()
        survived = wf.emotion_damage(base, back, labels[i: i + 1])[0][0]
        assert survived == pytest.approx(res.dmae[i], rel=0.05), (survived, res.dmae[i])
    assert not list(tmp_path.glob(".*.tmp"))


def test_quantize_keeps_the_trimmed_ends_non_zero(prepared, usable, fe64):
    a = next(wf.excerpt_audio(prepared, n, fe64) for n in usable if int(prepared.table.at[n, "offset"]) == 0)
    x16 = read_audio_int16(a.audio_path)
    target = a.signal.astype(np.float64).copy()
    target[0] = 0.0  # would be trimmed on reading back, shifting every frame
    out = wf.quantize_into_file(x16, a, target)
    assert out[a.trim_start] != 0 and np.sign(out[a.trim_start]) == np.sign(x16[a.trim_start])
    with pytest.raises(MerError, match="adversarial segment of 5 samples"):
        wf.quantize_into_file(x16, a, np.zeros(5))
