"""Config: presets, overrides, and every validation error before work starts."""

from __future__ import annotations

import pytest

from dainv.config import (
    ARMS,
    RunConfig,
    apply_overrides,
    dump_yaml,
    from_dict,
    list_presets,
    load_config,
    load_preset,
    to_dict,
)
from dainv.errors import ConfigError


def test_defaults_are_spec():
    c = RunConfig()
    t = c.train
    assert (t.epochs, t.batch_size, t.views, t.lr, t.momentum, t.nesterov) == (350, 128, 8, 0.01, 0.9, True)
    assert t.milestones == [200, 250, 300] and t.lr_factor == 0.1 and t.weight_decay == 0
    assert t.alpha == 0.1 and t.alpha_ratio == 10 and t.layers == "auto"
    assert t.denominator == "all" and t.precision == "fp32"
    assert c.augment.scheme == "heavier" and c.augment.sampling == "truncnorm"
    assert c.augment.interpolation == "bilinear" and c.eval.scheme == "heavier_eval"
    assert c.eval.transforms == 5 and c.eval.tta_views == 10


def test_presets_exist_and_load():
    assert {"paper", "cpu-short", "quick"} <= set(list_presets())
    for name in ("paper", "cpu-short", "quick"):
        assert load_preset(name)["description"]
        cfg = load_config(name, arm="baseline")
        assert cfg.train.views == 1 and cfg.train.alpha == 0
    paper = load_config("paper", arm="dai")
    assert paper.train.epochs == 350 and paper.model.width == 1.0 and paper.data.n_train is None


def test_arms_and_overrides_and_roundtrip():
    assert ARMS["control"] == {"views": 8, "alpha": 0.0}
    cfg = load_config("quick", overrides=["train.epochs=3", "model.width=0.5", "train.layers=[conv8, conv9]"], arm="dai")
    assert cfg.train.epochs == 3 and cfg.model.width == 0.5 and cfg.train.layers == ["conv8", "conv9"]
    import yaml

    again = from_dict(yaml.safe_load(dump_yaml(cfg)))
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["train.batch_size=100"], "not divisible by 8 views"),
        (["train.layers=[conv1, conv12]"], "unknown layer name"),
        (["train.epochs=0"], "train.epochs"),
        (["train.alpha=1.0"], r"train.alpha: must be in \[0, 1\)"),
        (["train.alpha=-0.1"], "train.alpha"),
        (["train.lr=-0.01"], "train.lr"),
        (["train.views=1"], "several views"),
        (["train.precision=fp16"], "train.precision"),
        (["train.denominator=some"], "train.denominator"),
        (["train.milestones=[300, 200]"], "milestones"),
        (["augment.scheme=heavy"], "unknown scheme"),
        (["model.width=0"], "model.width"),
        (["data.dataset=mnist"], "invalid setting data.dataset"),
        (["data.n_train=3"], "cannot fill"),
        (["device=tpu"], "device"),
        (["train.epochs=ten"], "takes an integer"),
        (["train.nesterov=1"], "true/false"),
        (["train.optimizer=adam"], "unknown config key 'train.optimizer'"),
        (["bogus=1"], "unknown config key 'bogus'"),
        (["train=3"], "is a section"),
        (["train.epochs"], "key=value"),
    ],
)
def test_invalid_settings_raise_clear_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides=overrides, arm="dai")


def test_unknown_preset_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'papr'.*paper"):
        load_config("papr")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(None, files=[bad])
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(None, files=[tmp_path / "missing.yaml"])
    good = tmp_path / "good.yaml"
    good.write_text("train:\n  epochs: 7\n")
    assert load_config(None, files=[good]).train.epochs == 7
    with pytest.raises(ConfigError, match="unknown arm"):
        load_config(None, arm="dia")
    with pytest.raises(ConfigError):
        apply_overrides(RunConfig(), ["model.width=[1,2]"])
