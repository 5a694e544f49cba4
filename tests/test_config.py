"""Profiles, the ``*Config`` dataclasses and their validation."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_lib import config
from mer_lib.config import (
    DEFAULT_PROFILE,
    EMOTIONS,
    MIDLEVEL,
    PROFILES,
    SYSTEMS,
    AttackConfig,
    DataConfig,
    FeatureConfig,
    Profile,
    RunLayout,
    SplitConfig,
    TrainConfig,
    check_choice,
    check_eps,
    get_profile,
)
from mer_lib.errors import MerError

SECTIONS = {"data": DataConfig, "features": FeatureConfig, "split": SplitConfig, "train": TrainConfig,
            "attack": AttackConfig}


def test_fixed_facts():
    assert len(EMOTIONS) == 8 and len(set(EMOTIONS)) == 8
    assert len(MIDLEVEL) == 7 and len(set(MIDLEVEL)) == 7 and not set(EMOTIONS) & set(MIDLEVEL)
    assert len(SYSTEMS) == len(set(SYSTEMS)) == 5
    defaults = FeatureConfig()
    assert (defaults.sample_rate, defaults.fps, defaults.frame_size) == (config.SAMPLE_RATE, config.FPS,
                                                                         config.FRAME_SIZE)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_builds_and_is_found_by_name_and_by_object(name):
    profile = get_profile(name)
    assert isinstance(profile, Profile) and profile.name == name and profile.description
    assert get_profile(profile) is profile
    for section, cls in SECTIONS.items():
        assert type(getattr(profile, section)) is cls
    assert profile.train.seeds and profile.data.source in ("synthetic", "real")


def test_profile_names_and_default():
    assert set(PROFILES) == {"paper", "paper-synthetic", "quick", "smoke"} and DEFAULT_PROFILE in PROFILES
    assert get_profile("paper").data.source == "real"
    assert get_profile("paper").train == TrainConfig() and get_profile("paper").attack == AttackConfig()
    smoke, quick = get_profile("smoke"), get_profile("quick")
    assert smoke.data.n_excerpts < quick.data.n_excerpts and smoke.train.max_epochs < quick.train.max_epochs
    # the paper's protocol, unchanged, on the quick profile's synthetic dataset
    full = get_profile("paper-synthetic")
    assert full.train == TrainConfig() and full.attack == AttackConfig() and full.data == quick.data


def test_speed_options_are_checked():
    with pytest.raises(MerError, match=r"TrainConfig.amp must be one of \['off', 'bf16'\]"):
        TrainConfig(amp="fp16")
    with pytest.raises(MerError, match="TrainConfig.deterministic"):
        TrainConfig(deterministic="yes")


@pytest.mark.parametrize("name", ["fast", "", "Quick"])
def test_unknown_profile_names_the_choices(name):
    with pytest.raises(MerError, match=r"unknown profile .*expected one of "
                                       r"\['paper', 'paper-synthetic', 'quick', 'smoke'\]"):
        get_profile(name)


def test_to_dict_holds_every_field():
    profile = get_profile("smoke")
    d = profile.to_dict()
    assert set(d) == {"name", "description", *SECTIONS}
    for section, cls in SECTIONS.items():
        assert set(d[section]) == {f.name for f in dataclasses.fields(cls)}
        assert d[section] == dataclasses.asdict(getattr(profile, section))
    assert d["train"]["seeds"] == (6, 21) and d["attack"]["eps_values"] == (0.1,)


def test_as_table_lists_every_value_as_text():
    profile = get_profile("quick")
    table = profile.as_table()
    assert isinstance(table, pd.DataFrame) and list(table.columns) == ["section", "parameter", "value"]
    assert table["section"].unique().tolist() == list(SECTIONS)
    assert len(table) == sum(len(dataclasses.fields(cls)) for cls in SECTIONS.values())
    assert table["value"].map(type).eq(str).all()
    cell = table.set_index(["section", "parameter"])["value"]
    assert cell["train", "seeds"] == "(6, 21, 42, 796, 950)" and cell["data", "source"] == "synthetic"
    assert cell["attack", "bounded_step_size"] == "None" and cell["features", "fps"] == "31.3"


@pytest.mark.parametrize("obj", [get_profile("smoke"), DataConfig(), FeatureConfig(), SplitConfig(),
                                 TrainConfig(), AttackConfig()], ids=lambda o: type(o).__name__)
def test_configs_are_frozen(obj):
    field = dataclasses.fields(obj)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, field, getattr(obj, field))


def test_profiles_are_hashable_and_compare_by_value():
    smoke = get_profile("smoke")
    assert hash(smoke) == hash(dataclasses.replace(smoke)) and smoke == dataclasses.replace(smoke)
    assert smoke != get_profile("quick")


# --------------------------------------------------------------------------- run layout
def test_run_layout_paths(tmp_path):
    layout = RunLayout(str(tmp_path))
    assert isinstance(layout.root, Path) and layout.root == tmp_path
    assert layout.synthetic_dataset == tmp_path / "data" / "soundtracks_synthetic"
    assert layout.cache == tmp_path / "data" / "cache" and layout.dataset_table == tmp_path / "data" / "dataset.csv"
    assert (layout.models, layout.attacks) == (tmp_path / "models", tmp_path / "attacks")
    assert layout.tables() == tmp_path / "tables" / "own"
    assert layout.tables("published") == tmp_path / "tables" / "published"
    assert layout.regression == tmp_path / "regression" and layout.notebooks == tmp_path / "notebooks"
    assert layout.times == tmp_path / "pipeline_times.json"
    assert RunLayout(tmp_path) == layout and not tmp_path.joinpath("data").exists()  # computes paths only
    with pytest.raises(AttributeError, match="immutable"):
        layout.root = tmp_path / "other"


# --------------------------------------------------------------------------- AttackConfig validation
@pytest.mark.parametrize("field", ["max_iters", "adv_train_iters", "adv_every", "bounded_steps", "batch_size"])
@pytest.mark.parametrize("value", [0, -3, 2.0, True, "5", None])
def test_attack_config_counts_must_be_positive_integers(field, value):
    with pytest.raises(MerError, match=rf"AttackConfig\.{field} must be a positive integer, got {value!r}"):
        AttackConfig(**{field: value})


def test_attack_config_accepts_numpy_integers():
    assert AttackConfig(max_iters=np.int64(7)).max_iters == 7


@pytest.mark.parametrize("field", ["lr", "adv_train_lr"])
@pytest.mark.parametrize("value", [0, -0.1, math.nan, math.inf, "0.1", None])
def test_attack_config_rates_must_be_positive_numbers(field, value):
    with pytest.raises(MerError, match=rf"AttackConfig\.{field} must be a positive number"):
        AttackConfig(**{field: value})


def test_attack_config_choices_eps_and_step_size():
    with pytest.raises(MerError, match=r"bounded_update must be one of \['sign', 'adam'\], got 'sgd'"):
        AttackConfig(bounded_update="sgd")
    with pytest.raises(MerError, match=r"bounded_stop must be one of \['fixed', 'correlation'\], got 'best'"):
        AttackConfig(bounded_stop="best")
    with pytest.raises(MerError, match="eps must be a positive number, got -0.1"):
        AttackConfig(eps_values=(0.1, -0.1))
    with pytest.raises(MerError, match="bounded_step_size must be positive or None, got 0"):
        AttackConfig(bounded_step_size=0)
    ok = AttackConfig(bounded_update="adam", bounded_stop="correlation", eps_values=(), bounded_step_size=0.5)
    assert ok.bounded_step_size == 0.5 and ok.eps_values == ()


# --------------------------------------------------------------------------- helpers
@pytest.mark.parametrize("eps", [0.1, 3, np.float32(0.25), np.float64(1e-9)])
def test_check_eps_returns_a_float(eps):
    out = check_eps(eps)
    assert type(out) is float and out == float(eps)


@pytest.mark.parametrize("eps", [0, 0.0, -1, math.nan, math.inf, "0.1", None])
def test_check_eps_rejects(eps):
    with pytest.raises(MerError, match=r"eps must be a positive number, got "):
        check_eps(eps)


def test_check_choice():
    assert check_choice("mode", "paper", ("paper", "bounded")) is None
    with pytest.raises(MerError, match=r"^mode must be one of \['paper', 'bounded'\], got 'pgd'$"):
        check_choice("mode", "pgd", ("paper", "bounded"))


def test_eps_and_rates_accept_numpy_numbers_and_refuse_booleans():
    import numpy as np

    from mer_lib.config import AttackConfig, check_eps
    from mer_lib.errors import MerError

    assert check_eps(np.int64(3)) == 3.0 and check_eps(np.float32(0.5)) == 0.5
    for bad in (True, np.bool_(True)):
        with pytest.raises(MerError, match="eps must be a positive number"):
            check_eps(bad)
    with pytest.raises(MerError, match="AttackConfig.lr"):
        AttackConfig(lr=True)


def test_a_system_registered_once_reaches_every_place(monkeypatch):
    """A sixth system is one registry entry: networks, twins, colours, order, training and cost tables see it."""
    from mer_lib import config as cfg
    from mer_lib.analysis import figures
    from mer_lib.attacks import logs, protocol_cost
    from mer_lib.models import nets

    info = cfg.SystemInfo("aA2M2E", bottleneck=True, midlevel_supervised=True, adversarial=True, notebook="04",
                          color="#123456")
    monkeypatch.setitem(cfg.SYSTEM_REGISTRY, info.name, info)
    model = nets.build_model("aA2M2E", width=0.0625)
    assert model.system == "aA2M2E" and nets.system_spec("aA2M2E") is info
    assert nets.plain_twin("aA2M2E") == "A2M2E"  # it starts from A2M2E's kept state (protocol §5)
    assert figures.system_colors(["aA2M2E", "A2E"]) == {"A2E": "#0173b2", "aA2M2E": "#123456"}
    assert logs.system_order(["zz", "aA2M2E", "A2E"]) == ["A2E", "aA2M2E", "zz"]
    assert cfg.systems_trained_in("04") == ("aA2E", "aA2B2E", "aA2M2E")
    assert cfg.systems_trained_in()[-1] == "aA2M2E"
    jobs = protocol_cost.protocol_jobs("smoke")
    assert set(jobs.loc[jobs["system"] == "aA2M2E", "notebook"]) == {"04", "05"}
    monkeypatch.setitem(cfg.SYSTEM_REGISTRY, info.name, dataclasses.replace(info, default=False))
    assert "aA2M2E" not in cfg.systems_trained_in()
    with pytest.raises(MerError, match="unknown system 'A3E'"):
        cfg.system_info("A3E")
