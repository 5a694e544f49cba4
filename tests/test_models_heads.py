"""Heads refit post hoc on frozen trained backbones (the ridge sweep and the head swap)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import fake_prepared

from mer_lib.config import TrainConfig, get_profile
from mer_lib.errors import MerError
from mer_lib.models.heads import posthoc_heads, variant_label
from mer_lib.models.refit import least_squares_layer
from mer_lib.models.stage import load_model_dir, split_arrays, train_system
from mer_lib.models.train import predict

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("heads")
    prepared = fake_prepared(tmp)
    profile = dataclasses.replace(get_profile("smoke"), train=TrainConfig(
        width=0.0625, max_epochs=1, patience=1, lr=1e-3, batch_size=4, seeds=(3,), val_drop_last=False,
        refit_head=True))
    dirs = {(s, 3): train_system(prepared, s, 3, profile, tmp / "run", device="cpu", progress=False)
            for s in ("A2E", "A2M2E")}
    return prepared, dirs, tmp / "run"


def test_ridge_sweep_refits_the_head_and_leaves_the_backbone(trained):
    prepared, dirs, run = trained
    out = posthoc_heads({("A2E", 3): dirs[("A2E", 3)]}, prepared, run, ridges=(0.001, 1.0))
    assert out["label"].tolist() == ["A2E, ridge 0.001", "A2E, ridge 1"] and (out["head"] == "own").all()
    folder = out.set_index("ridge")["model_dir"]
    source, _ = load_model_dir(dirs[("A2E", 3)])
    small, metrics = load_model_dir(folder[0.001])
    large, _ = load_model_dir(folder[1.0])
    assert metrics["posthoc"]["ridge"] == 0.001 and metrics["system"] == "A2E"
    for name, value in source.backbone.state_dict().items():
        assert torch.equal(value, small.backbone.state_dict()[name])
    # the emotion layer is the ridge solution on the frozen backbone's training features
    x, y, _ = split_arrays(prepared, "train")
    with torch.no_grad():
        features = source.backbone(torch.as_tensor(x).contiguous(memory_format=torch.channels_last)).double().numpy()
    weight, _ = least_squares_layer(features, y, 0.001)
    np.testing.assert_allclose(small.emotion.weight.detach().numpy(), weight, rtol=1e-4, atol=1e-6)
    # a larger penalty gives a smaller head
    assert large.emotion.weight.norm() < small.emotion.weight.norm()
    # each variant's record starts from the trained head, not from the variant refit before it
    trained_norm = float(source.emotion.weight.detach().double().norm())
    assert [load_model_dir(folder[r])[1]["head_refit"]["emotion"]["norm_before"] for r in (0.001, 1.0)] == \
        pytest.approx([trained_norm, trained_norm], rel=1e-12)
    again = posthoc_heads({("A2E", 3): dirs[("A2E", 3)]}, prepared, run, ridges=(0.001, 1.0))
    pd.testing.assert_frame_equal(again, out)


def test_head_swap_puts_the_units_route_on_a_black_box_backbone(trained):
    prepared, dirs, run = trained
    out = posthoc_heads({("A2E", 3): dirs[("A2E", 3)], ("A2M2E", 3): dirs[("A2M2E", 3)]}, prepared, run,
                        ridges=(0.01,), heads=("units", "direct"))
    assert set(out["label"]) == {variant_label(s, 0.01, h) for s in ("A2E", "A2M2E") for h in ("units", "direct")}
    folder = out.set_index("label")["model_dir"]
    units, metrics = load_model_dir(folder["A2E backbone + units head, ridge 0.01"])
    assert units.system == "A2M2E" and metrics["posthoc"]["head"] == "units"
    assert metrics["head_refit"]["bottleneck"]["n"] == 16  # the 7 units were fit to the mid-level targets
    a2e, _ = load_model_dir(dirs[("A2E", 3)])
    for name, value in a2e.backbone.state_dict().items():
        assert torch.equal(value, units.backbone.state_dict()[name])
    x, _, _ = split_arrays(prepared, "test")
    emotions, bottleneck = predict(units, x, "cpu")
    assert emotions.shape[1] == 8 and bottleneck.shape[1] == 7
    direct, _ = load_model_dir(folder["A2M2E backbone + direct head, ridge 0.01"])
    assert direct.system == "A2E" and direct.bottleneck is None
    with pytest.raises(MerError, match="head"):
        posthoc_heads({("A2E", 3): dirs[("A2E", 3)]}, prepared, run, ridges=(0.01,), heads=("linear",))
    with pytest.raises(MerError, match="ridge"):
        posthoc_heads({("A2E", 3): dirs[("A2E", 3)]}, prepared, run, ridges=())


def test_variants_of_one_model_are_attacked_and_kept_apart(trained):
    from mer_lib.attacks.stage import attack_variants
    from mer_lib.config import AttackConfig

    prepared, dirs, run = trained
    variants = posthoc_heads({("A2E", 3): dirs[("A2E", 3)]}, prepared, run, ridges=(0.001, 1.0), heads=(None, "units"))
    metrics = attack_variants(variants, prepared, run, "paper", AttackConfig(lr=0.1, max_iters=2), executor=0)
    assert len(metrics) == 4 and (metrics["system"] == "A2E").all()
    assert metrics[["head", "ridge"]].drop_duplicates().shape[0] == 4
    assert metrics["dmae"].notna().all() and metrics["dmae"].nunique() == 4
    # the smaller head is the less damaged one after the same walk
    own = metrics[metrics["head"] == "own"].set_index("ridge")
    assert own.loc[1.0, "dmae"] < own.loc[0.001, "dmae"]


def test_sweep_and_swap_use_the_trained_models_at_the_profile_ridge(trained):
    from mer_lib.models.heads import head_swap, ridge_sweep

    prepared, dirs, run = trained
    train = TrainConfig(refit_head=True, refit_ridge=0.01)
    sweep = ridge_sweep(dirs, prepared, run, train, ridges=(0.001, 0.01))
    assert sweep["ridge"].tolist() == [0.001, 0.001, 0.01, 0.01]
    own = sweep[sweep["ridge"] == 0.01].set_index("system")["model_dir"]
    assert own["A2E"] == str(dirs[("A2E", 3)]) and own["A2M2E"] == str(dirs[("A2M2E", 3)])
    swap = head_swap(dirs, prepared, run, train).set_index(["system", "route"])
    assert swap.loc[("A2E", "direct"), "model_dir"] == str(dirs[("A2E", 3)])
    assert swap.loc[("A2M2E", "units"), "model_dir"] == str(dirs[("A2M2E", 3)])
    assert swap.loc[("A2E", "units"), "head"] == "units" and swap.loc[("A2M2E", "direct"), "head"] == "direct"
    with pytest.raises(MerError, match="A2E and A2M2E"):
        head_swap({("A2E", 3): dirs[("A2E", 3)]}, prepared, run, train)
