"""method.protocol (issue 9 §2), presets (issues 9–11) and the one table of arms (issue 12)."""

from __future__ import annotations

import pytest
import yaml

from dainv.config import (
    ARMS,
    PROTOCOLS,
    from_dict,
    list_presets,
    load_config,
    load_preset,
    run_settings,
    to_dict,
    validate,
)
from dainv.errors import ConfigError

GPU_PRESETS = [
    "paper",
    "paper-authors-code",
    "wrn-cifar10",
    "densenet-cifar10",
    "allcnn-tinyimagenet",
]
THESIS = {
    "wrn-cifar10": ("wrn-28-10", 0.1, 0.2, [60, 120, 160], 200, 128),
    "densenet-cifar10": ("densenet-bc-100-12", 0.1, 0.1, [150, 225], 300, 64),
    "allcnn-tinyimagenet": ("allcnn-imagenet", 0.01, 0.1, [100, 125], 150, 128),
}


def test_default_protocol_is_the_paper_text():
    cfg = load_config(None, arm="dai")
    assert cfg.method.protocol == "paper"
    assert cfg.train.denominator == "all" and cfg.eval.scheme == "heavier_eval"


def test_authors_code_sets_every_code_choice():
    cfg = load_config(None, overrides=["method.protocol=authors_code"], arm="dai")
    assert cfg.train.denominator == "same_class" and cfg.eval.scheme == "heavier_eval_authors"
    saved = from_dict(yaml.safe_load(yaml.safe_dump(to_dict(cfg))))  # what config.yaml holds
    assert saved.method.protocol == "authors_code" and saved.train.denominator == "same_class"
    validate(saved)


def test_authors_code_agrees_with_an_explicit_same_value():
    cfg = load_config(
        None, overrides=["train.denominator=same_class", "method.protocol=authors_code"], arm="dai"
    )
    assert cfg.eval.scheme == "heavier_eval_authors"


@pytest.mark.parametrize(
    "item, key",
    [("train.denominator=all", "train.denominator"), ("eval.scheme=heavier_eval", "eval.scheme")],
)
def test_contradiction_names_both_keys(item, key):
    for order in ([item, "method.protocol=authors_code"], ["method.protocol=authors_code", item]):
        with pytest.raises(ConfigError) as e:
            load_config(None, overrides=order, arm="dai")
        msg = str(e.value)
        assert "method.protocol=authors_code" in msg and key in msg and f"--set {item}" in msg


def test_contradiction_with_the_preset(tmp_path):
    with pytest.raises(ConfigError, match=r"preset 'paper-authors-code'.*train.denominator=all"):
        load_config("paper-authors-code", overrides=["train.denominator=all"], arm="dai")


def test_paper_protocol_lets_options_mix():
    cfg = load_config(None, overrides=["train.denominator=same_class"], arm="dai")
    assert cfg.method.protocol == "paper" and cfg.eval.scheme == "heavier_eval"


def test_unknown_protocol_and_inconsistent_saved_config():
    with pytest.raises(ConfigError, match="method.protocol: must be one of paper, authors_code"):
        load_config(None, overrides=["method.protocol=keras"], arm="dai")
    d = to_dict(load_config(None, overrides=["method.protocol=authors_code"], arm="dai"))
    d["train"]["denominator"] = "all"  # a hand-edited config.yaml
    with pytest.raises(
        ConfigError, match="method.protocol=authors_code needs train.denominator=same_class"
    ):
        validate(from_dict(d))
    assert set(PROTOCOLS) == {"paper", "authors_code"}


def test_paper_authors_code_preset_is_paper_with_the_switch():
    paper, code = load_preset("paper"), load_preset("paper-authors-code")
    assert code["method"]["protocol"] == "authors_code" and paper["method"]["protocol"] == "paper"
    strip = lambda d: {k: v for k, v in d.items() if k not in ("description", "method")}  # noqa: E731
    assert strip(paper) == strip(code)
    cfg = load_config("paper-authors-code", arm="dai")
    assert (cfg.train.epochs, cfg.train.denominator, cfg.eval.scheme) == (
        350,
        "same_class",
        "heavier_eval_authors",
    )


def test_gpu_presets_frequencies_and_descriptions():
    assert set(GPU_PRESETS) <= set(list_presets())
    for name in GPU_PRESETS:
        raw = load_preset(name)
        desc = raw["description"]
        assert "GPU job" in desc and "SPEC" not in desc and "docs/method.md" in desc, name
        t = raw["train"]
        assert t["eval_every"] > 1 and t["monitor_every"] > 1 and t["checkpoint_every"] > 1, name
        assert len(t["keep_epochs"]) >= 3 and max(t["keep_epochs"]) == t["epochs"], name
        assert set(raw["arms"]) <= set(ARMS)
    cfg = load_config("paper", arm="dai")
    assert (cfg.train.eval_every, cfg.train.monitor_every, cfg.train.checkpoint_every) == (
        10,
        5,
        10,
    )
    assert cfg.train.keep_epochs == [50, 100, 200, 350]
    assert load_config("paper", arm="dai", overrides=["train.epochs=20"]).train.epochs == 20


@pytest.mark.parametrize("name", list(THESIS))
def test_thesis_presets(name):
    from dainv.models import MODELS

    model, lr, factor, milestones, epochs, batch = THESIS[name]
    raw = load_preset(name)
    raw.pop("arms")
    cfg = from_dict(raw)  # types checked key by key, without building the model
    t = cfg.train
    assert cfg.model.name == model and t.layers == "auto"
    assert (t.lr, t.lr_factor, t.milestones, t.epochs, t.batch_size) == (
        lr,
        factor,
        milestones,
        epochs,
        batch,
    )
    if name == "allcnn-tinyimagenet":
        assert (
            cfg.data.dataset.startswith("tinyimagenet:")
            and "--set data.dataset=" in raw["description"]
        )
    if model in MODELS:  # registered by the models helper: validate the whole preset
        load_config(name, arm="dai", overrides=["data.dataset=cifar10"] if "tiny" in name else [])


def test_every_preset_reads_and_names_no_spec_file():
    for name in list_presets():
        raw = load_preset(name)
        assert raw.get("description") and "SPEC" not in raw["description"], name
        from_dict(run_settings(raw))
