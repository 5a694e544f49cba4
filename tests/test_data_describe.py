"""Descriptive statistics of a prepared table against direct numpy/pandas computations."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_lib.config import EMOTIONS, MIDLEVEL, TARGET_SCALE
from mer_lib.data import describe
from mer_lib.data.cache import PreparedData

TARGETS = list(EMOTIONS) + list(MIDLEVEL)


def make_table(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """A prepared table: targets divided by 10, some emotion ratings at the floor (1.0 -> 0.1)."""
    rng = np.random.default_rng(seed)
    emotions = np.round(rng.uniform(1.0, 9.0, size=(n, len(EMOTIONS))), 2)
    emotions[rng.random(emotions.shape) < 0.2] = 1.0
    midlevel = np.round(rng.uniform(1.0, 10.0, size=(n, len(MIDLEVEL))), 4)
    table = pd.DataFrame(np.concatenate([emotions, midlevel], axis=1) / TARGET_SCALE, columns=TARGETS,
                         index=pd.Index(np.arange(1, n + 1), name="number"))
    table.insert(0, "audio_path", [f"/data/{k:03d}.wav" for k in table.index])
    table["split"] = "train"
    return table


QUOTED = {("valence", "melodiousness"): 0.62, ("tension", "dissonance"): 0.55, ("sad", "minorness"): 0.4}


def test_target_summary_matches_numpy():
    table = make_table()
    summary = describe.target_summary(table)
    assert summary.index.tolist() == TARGETS and summary.index.name == "target"
    assert list(summary.columns) == ["kind", "mean", "sd", "min", "max", "at_floor"]
    assert (summary["kind"] == ["emotion"] * 8 + ["mid-level"] * 7).all()
    for name in TARGETS:
        v = table[name].to_numpy(dtype=np.float64) * 10
        row = summary.loc[name]
        assert row["mean"] == pytest.approx(v.mean(), rel=1e-12)
        assert row["sd"] == pytest.approx(np.std(v, ddof=1), rel=1e-12)
        assert row["min"] == pytest.approx(v.min()) and row["max"] == pytest.approx(v.max())
        assert row["at_floor"] == pytest.approx(np.mean(np.abs(v - 1.0) < 1e-9))
    assert summary.loc[list(EMOTIONS), "at_floor"].gt(0).all()
    assert summary.loc[list(EMOTIONS), "min"].eq(1.0).all()


def test_target_summary_reads_float32_tables():
    table = make_table(seed=1)
    table[TARGETS] = table[TARGETS].astype(np.float32)
    summary = describe.target_summary(table)
    # float32 0.1 * 10 is not exactly 1.0, yet floor ratings are still counted
    expected = (table["valence"].to_numpy() == np.float32(0.1)).mean()
    assert summary.loc["valence", "at_floor"] == pytest.approx(expected) and expected > 0


def test_target_correlations_match_pandas_and_numpy():
    table = make_table(seed=2)
    corr = describe.target_correlations(table)
    assert corr.index.tolist() == list(EMOTIONS) and corr.columns.tolist() == list(MIDLEVEL)
    for e in EMOTIONS:
        for m in MIDLEVEL:
            expected = np.corrcoef(table[e].to_numpy(np.float64), table[m].to_numpy(np.float64))[0, 1]
            assert corr.loc[e, m] == pytest.approx(expected, rel=1e-10)
    # extra columns (paths, split) are ignored, and the scale does not matter
    scaled = table.assign(**{c: table[c] * 10 for c in TARGETS}).drop(columns=["audio_path", "split"])
    pd.testing.assert_frame_equal(describe.target_correlations(scaled), corr, rtol=1e-10)


def test_reference_matrix_places_the_quoted_values():
    ref = describe.reference_matrix(QUOTED)
    assert ref.shape == (8, 7) and ref.index.tolist() == list(EMOTIONS) and ref.columns.tolist() == list(MIDLEVEL)
    assert ref.loc["valence", "melodiousness"] == 0.62 and ref.loc["sad", "minorness"] == 0.4
    assert ref.notna().sum().sum() == len(QUOTED)
    assert describe.reference_matrix({}).isna().all().all()


def test_compare_correlations():
    corr = describe.target_correlations(make_table(seed=3))
    out = describe.compare_correlations(corr, QUOTED)
    assert list(out.columns) == ["emotion", "feature", "real (quoted)", "this dataset", "difference"]
    assert list(zip(out["emotion"], out["feature"])) == list(QUOTED)
    for row in out.itertuples(index=False):
        assert row[3] == corr.loc[row.emotion, row.feature]
        assert row.difference == pytest.approx(row[3] - QUOTED[(row.emotion, row.feature)])


def prepared_of(table, **kw):
    return PreparedData(table, Path("cache"), 0.0, 1.0, 313, **kw)


def test_dataset_notes_of_a_clean_table_say_none():
    table = make_table(5).assign(frames=[400, 313, 500, 350, 320])
    notes = describe.dataset_notes(prepared_of(table))
    assert list(notes.columns) == ["note", "count", "files"]
    assert notes["count"].tolist() == [0, 0] and notes["files"].tolist() == ["-", "-"]
    assert notes["note"].tolist() == ["audio files without ratings or mid-level annotations (not loaded)",
                                      "files shorter than the 313-frame excerpt (padded by wrapping around)"]
    assert describe.dataset_notes(prepared_of(table.assign(frames=313)))["count"].tolist() == [0, 0]


def test_dataset_notes_list_unrated_and_short_files():
    table = make_table(30).assign(frames=400)
    table.loc[[4, 17], "frames"] = [312, 40]
    unrated = ("/data/Set1/361.wav", "/data/Set1/400.mp3")
    notes = describe.dataset_notes(prepared_of(table, unrated_audio=unrated)).set_index("note")["files"]
    assert notes.iloc[0] == "361.wav, 400.mp3"
    assert notes.iloc[1] == "004.wav (312 frames), 017.wav (40 frames)"
    many = prepared_of(table.assign(frames=10), unrated_audio=tuple(f"/d/{n}.wav" for n in range(400, 425)))
    notes = describe.dataset_notes(many)
    assert notes["count"].tolist() == [25, 30]
    assert notes["files"].iloc[0].endswith("419.wav, ... (5 more)")
    assert notes["files"].iloc[1].endswith("020.wav (10 frames), ... (10 more)")


def test_dataset_notes_flag_a_subset_of_set_1():
    table = make_table(360).assign(frames=400).drop(index=[17, 200])
    table.loc[361] = table.loc[1]
    notes = describe.dataset_notes(prepared_of(table, comparable_with_published=False))
    assert len(notes) == 3
    assert notes.iloc[2].tolist() == [
        "not the 360 Set-1 excerpts (allow_subset=True): results not comparable with the published runs",
        3, "missing: 017, 200; not in Set 1: 361"]
    assert len(describe.dataset_notes(prepared_of(table, comparable_with_published=True))) == 2
