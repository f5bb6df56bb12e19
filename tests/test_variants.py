"""Arm variants (a base arm plus settings, declared in a preset), evaluation under a preset's
other schemes, and both denominators of Eq. 3 in every run's metrics (docs/method.md §9)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import dainv.config as config_load
from dainv.cli import main
from dainv.config import load_config, preset_variants
from dainv.errors import ConfigError
from dainv.train import Trainer


@pytest.fixture
def preset_dir(tmp_path, monkeypatch, random_npz, tiny_overrides):
    """A preset folder holding ``ablate``: baseline + two DAI variants + eval_schemes, on the
    synthetic npz data set, tiny settings."""
    settings = dict(o.split("=", 1) for o in tiny_overrides)
    raw: dict = {"arms": ["baseline", "dai-sc", "dai-nn"], "eval_schemes": ["heavier_eval", "heavier_eval_authors"],
                 "variants": {"dai-sc": {"arm": "dai", "set": {"train.denominator": "same_class"}},
                              "dai-nn": {"arm": "dai", "set": {"augment.interpolation": "nearest"}}}}
    for key, val in settings.items():
        node = raw
        *head, last = key.split(".")
        for p in head:
            node = node.setdefault(p, {})
        node[last] = yaml.safe_load(val)
    raw.setdefault("data", {}).update(dataset=f"npz:{random_npz}", n_test=32)
    raw["train"].update(epochs=2, keep_epochs=[1, 2])
    raw.setdefault("eval", {})["batch_size"] = 64
    d = tmp_path / "presets"
    d.mkdir()
    (d / "ablate.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(config_load, "PRESET_DIR", d)
    return d


def test_variant_is_its_arm_plus_its_settings(preset_dir):
    cfg = load_config("ablate", arm="dai-sc")
    assert (cfg.train.views, cfg.train.alpha, cfg.train.denominator) == (8, 0.1, "same_class")
    assert load_config("ablate", arm="dai").train.denominator == "all"
    # a --set given on the command line still comes last
    assert load_config("ablate", overrides=["augment.interpolation=nearest"], arm="dai-sc").augment.interpolation == "nearest"


@pytest.mark.parametrize(
    "variants",
    [
        {"x": {"arm": "nope"}},  # unknown base arm
        {"dai": {"arm": "dai"}},  # a variant may not take an arm's name
        {"x": {"arm": "dai", "set": ["train.lr=1"]}},  # settings are a mapping
        {"x": {"arm": "dai", "sett": {}}},  # misspelt key
        ["dai-sc"],  # not a mapping at all
    ],
)
def test_bad_variants_are_refused_with_their_name(variants):
    with pytest.raises(ConfigError, match="variant|variants"):
        preset_variants({"variants": variants})


def test_bad_variant_setting_names_the_variant(preset_dir):
    raw = yaml.safe_load((preset_dir / "ablate.yaml").read_text())
    raw["variants"]["dai-sc"]["set"]["train.denominator"] = "some"
    (preset_dir / "ablate.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="variant 'dai-sc'"):
        load_config("ablate", arm="dai-sc")


@pytest.mark.slow  # ~40 s: three arms trained and evaluated under two schemes
def test_reproduce_trains_variants_and_evaluates_every_scheme(preset_dir, tmp_path):
    out = tmp_path / "rp"
    assert main(["reproduce", "--preset", "ablate", "--out", str(out), "--quiet"]) == 0
    index = json.loads((out / "reproduce.json").read_text())
    assert index["arms"] == ["baseline", "dai-sc", "dai-nn"]
    cfgs = {a: yaml.safe_load((out / f"{a}-s0" / "config.yaml").read_text()) for a in index["arms"]}
    assert cfgs["dai-sc"]["train"]["denominator"] == "same_class" and cfgs["dai-sc"]["train"]["views"] == 8
    assert cfgs["dai-nn"]["augment"]["interpolation"] == "nearest" and cfgs["dai-nn"]["train"]["denominator"] == "all"
    # same initial weights for every arm (the seed), whatever the variant
    w = [torch.load(out / f"{a}-s0" / "checkpoints" / "epoch-0001.pt", weights_only=True) for a in index["arms"]]
    assert all(m["epoch"] == 1 for m in w)
    for arm in index["arms"]:
        run = out / f"{arm}-s0"
        for folder in ("eval", "eval+heavier_eval_authors", "eval-epoch-0001", "eval-epoch-0001+heavier_eval_authors"):
            summary = json.loads((run / folder / "summary.json").read_text())
            scheme = "heavier_eval_authors" if folder.endswith("authors") else "heavier_eval"
            assert summary["protocol"]["scheme"] == scheme, (arm, folder)
            assert summary["protocol"]["interpolation"] == cfgs[arm]["augment"]["interpolation"]
    results = json.loads((out / "results.json").read_text())
    other = results["other_schemes"]["heavier_eval_authors"]
    assert set(other["vs_baseline"]) == {"dai-sc − baseline", "dai-nn − baseline"}
    assert other["gap_vs_epochs"]["epochs"] == [1, 2]
    # the two schemes are measured, not copied from each other: the contrast differs
    assert other["invariance"]["baseline"]["layers"]["input"]["median"] != results["invariance"]["baseline"]["layers"]["input"]["median"]
    md = (out / "report.md").read_text()
    assert "Under the evaluation scheme `heavier_eval_authors`" in md and "dai-sc" in md
    # declared variants differ from the baseline by their settings: no warning (issue 20)
    assert "trained with different settings" not in md and results["settings"]["undeclared"] == []
    assert set(results["settings"]["differ"]) == {"train.denominator", "augment.interpolation"}
    # a second run finds everything current: no training, no evaluation
    assert main(["reproduce", "--preset", "ablate", "--out", str(out), "--quiet"]) == 0


def test_reproduce_refuses_an_unknown_arm_naming_the_variants(preset_dir, tmp_path, capsys):
    assert main(["reproduce", "--preset", "ablate", "--arms", "dai-xx", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "dai-xx" in err and "dai-sc" in err and "dai-nn" in err


@pytest.mark.parametrize("arm,denominator", [("baseline", "all"), ("dai", "all"), ("dai", "same_class"), ("control", "all")])
def test_metrics_log_both_denominators(random_data, tiny, tmp_path, arm, denominator):
    """Every arm records L_l under all pairs and under same-class pairs; the training loss uses
    the one it trains with."""
    cfg = tiny(arm, f"train.denominator={denominator}", "train.epochs=1")
    tr = Trainer(cfg, tmp_path / "run", data=random_data, quiet=True)
    rec = tr.fit()[-1]
    for key in ("dai", "dai_same_class", "dai_monitor", "dai_monitor_same_class"):
        assert list(rec[key]) == tr.layers, key
        assert all(0 < v < 2 for v in rec[key].values()), (key, rec[key])
    assert rec["dai_same_class"] != rec["dai"]  # two denominators, two ratios
    if cfg.train.alpha > 0:
        trained = rec["dai_same_class" if denominator == "same_class" else "dai"]
        want = (1 - cfg.train.alpha) * rec["train_ce"] + sum(a * trained[la] for a, la in zip(tr.crit.alphas, tr.layers))
        assert rec["train_loss"] == pytest.approx(want, rel=1e-6)
    saved = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert saved[-1]["dai_same_class"] == rec["dai_same_class"]
