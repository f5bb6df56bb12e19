"""Config robustness (issue 13: F1–F4, F6, M1, duplicate keys, booleans): one clear ConfigError.

Each bad value is refused by :func:`dainv.config.load_config` with a message that names the key,
where it was set (the file, the preset or ``--set``) and what it takes. The same cases through
the real command line are in tests/test_cli_faults.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from dainv.config import (
    NULLABLE,
    RunConfig,
    load_config,
    parse_yaml,
    read_run_config,
    to_dict,
    validate,
)
from dainv.errors import ConfigError


def _keys(obj, prefix=""):
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from _keys(v, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


ALL_KEYS = list(_keys(RunConfig()))
NON_NULL = [k for k in ALL_KEYS if k not in NULLABLE]


def _refused(overrides, *needles, files=(), preset=None):
    with pytest.raises(ConfigError) as e:
        load_config(preset, files=files, overrides=overrides, arm="dai")
    msg = str(e.value)
    for n in needles:
        assert n in msg, f"{n!r} not in: {msg}"
    assert "\n" not in msg
    return msg


# F1: an empty or null value, for every key that does not take null -------------------------


@pytest.mark.parametrize("key", NON_NULL)
def test_a_null_value_is_refused_for_every_key(key):
    item = f"{key}=null"
    _refused([item], f"'{key}'", "has no value", f"--set {item}", "leave the key out")


@pytest.mark.parametrize("empty", ["", "null", "~", "Null"])
def test_every_spelling_of_an_empty_value_is_refused(empty):
    """One key for the spellings: they reach the one check as the same None."""
    item = f"train.lr={empty}"
    _refused([item], "'train.lr'", "has no value", f"--set {item}", "leave the key out")


@pytest.mark.parametrize("key", NON_NULL)
def test_blank_key_in_a_yaml_file_is_refused(tmp_path, key):
    section, _, name = key.rpartition(".")
    text = f"{section}:\n  {name}:\n" if section else f"{name}:\n"
    f = tmp_path / "blank.yaml"
    f.write_text(text)
    _refused([], f"'{key}'", "has no value", str(f), files=[f])


def test_blank_key_in_a_run_config_on_resume(tmp_path):
    """train --resume reads config.yaml with read_run_config: the file is named."""
    f = tmp_path / "config.yaml"
    d = to_dict(load_config(None, arm="dai"))
    d["train"]["lr"] = None
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(
        ConfigError, match=r"'train.lr' has no value \(in config file .*config.yaml\)"
    ):
        read_run_config(f)


@pytest.mark.parametrize("key", sorted(NULLABLE))
def test_nullable_keys_take_null(key):
    cfg = load_config(None, overrides=[f"{key}=null"], arm="dai")
    section, name = key.split(".")
    assert getattr(getattr(cfg, section), name) is None


def test_empty_section_is_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n")
    _refused([], "section 'train' is empty", str(f), files=[f])


# M1: numbers with exponents ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, value",
    [("1e-3", 1e-3), ("5e-4", 5e-4), ("1E-2", 1e-2), ("2.5e-3", 2.5e-3), ("+1e-3", 1e-3)],
)
def test_exponent_numbers_are_numbers(raw, value):
    assert load_config(None, overrides=[f"train.lr={raw}"], arm="dai").train.lr == value


def test_exponent_numbers_in_files_and_ints():
    assert parse_yaml("a: 1e-3\nb: 5e-4\nc: 1e6\nd: -1e-3\ne: 3\nf: '1e-3'") == {
        "a": 1e-3, "b": 5e-4, "c": 1e6, "d": -1e-3, "e": 3, "f": "1e-3",
    }  # fmt: skip
    assert load_config(None, overrides=["train.epochs=1e2"], arm="dai").train.epochs == 100
    assert yaml.safe_load("a: 1e-3") == {"a": "1e-3"}  # PyYAML's own loader is left alone


def test_exponents_out_of_range_are_still_bounded():
    _refused(["train.lr=1e6"], "train.lr", "at most 10")
    _refused(["train.lr=-1e-3"], "train.lr", "positive")


# F2: devices -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dev", ["cuda:abc", "cudax", "xyz", "cuda:-1", "CPU", "tpu"])
def test_invalid_device_strings(dev):
    _refused([f"device={dev}"], "invalid setting device", repr(dev), "auto, cpu, cuda or cuda:N")


# F3: non-UTF-8 files ---------------------------------------------------------------------------


def test_non_utf8_yaml_file(tmp_path):
    f = tmp_path / "latin1.yaml"
    f.write_bytes("description: caf\xe9\n".encode("latin-1"))
    _refused([], str(f), "not UTF-8", "0xe9", "save it as UTF-8", files=[f])


def test_utf8_with_bom_is_fine(tmp_path):
    f = tmp_path / "bom.yaml"
    f.write_bytes("\ufefftrain:\n  epochs: 7\n".encode())
    assert load_config(None, files=[f], arm="dai").train.epochs == 7


# F4: bounds, NaN and infinity --------------------------------------------------------------------

BOUNDS = {
    "train.lr=1e39": "train.lr",
    "train.lr=11": "train.lr",
    "model.width=1e300": "model.width",
    "model.width=65": "model.width",
    "train.epochs=1000000": "train.epochs",
    "train.epochs=1e300": "train.epochs",
    "train.epochs=99999999999999999999999999": "train.epochs",
    "train.batch_size=1048576": "train.batch_size",
    "train.momentum=1": "train.momentum",
    "train.weight_decay=5": "train.weight_decay",
    "train.lr_factor=0": "train.lr_factor",
    "train.lr_factor=3": "train.lr_factor",
    "train.alpha_ratio=1e9": "train.alpha_ratio",
    "train.monitor_batches=100000": "train.monitor_batches",
    "train.log_every=0": "train.log_every",
    "train.eval_every=0": "train.eval_every",
    "train.monitor_every=-1": "train.monitor_every",
    "train.checkpoint_every=0": "train.checkpoint_every",
    "train.milestones=[0]": "train.milestones",
    "train.milestones=[100000]": "train.milestones",
    "train.keep_epochs=[0]": "train.keep_epochs",
    "eval.transforms=100000": "eval.transforms",
    "eval.tta_views=0": "eval.tta_views",
    "eval.batch_size=0": "eval.batch_size",
    "seed=-1": "seed",
    "seed=1e12": "seed",
    "eval.seed=4294967296": "eval.seed",
    "data.n_train=0": "data.n_train",
    "data.image_size=2": "data.image_size",
}


@pytest.mark.parametrize("item", list(BOUNDS))
def test_out_of_bounds_values(item):
    msg = _refused([item], f"invalid setting {BOUNDS[item]}", f"--set {item}")
    assert len(msg) < 400  # a huge number is shown short


@pytest.mark.parametrize("val", [".nan", ".NaN", ".inf", "-.inf", "1e400"])
@pytest.mark.parametrize("key", ["train.lr", "train.alpha", "model.width", "train.momentum"])
def test_nan_and_infinity_refused(key, val):
    _refused([f"{key}={val}"], f"'{key}'", "finite number")


def test_nan_refused_in_model_kwargs_and_in_validate():
    _refused(["model.kwargs={dropout: .nan}"], "model.kwargs.dropout", "finite")
    cfg = RunConfig()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, alpha=float("nan")))
    with pytest.raises(ConfigError, match="train.alpha: must be a finite number"):
        validate(cfg)


# Booleans where numbers are expected; duplicate keys ---------------------------------------------


@pytest.mark.parametrize(
    "item",
    ["train.milestones=[true]", "train.keep_epochs=[false]", "train.epochs=true", "train.lr=false",
     "model.width=yes", "data.n_test=true", "train.batch_size=on"],
)  # fmt: skip
def test_booleans_where_numbers_are_expected(item):
    _refused([item], item.split("=")[0])


def test_booleans_in_a_file(tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text("train:\n  epochs: true\n")
    _refused([], "'train.epochs' takes an integer, got True", str(f), files=[f])


def test_duplicate_keys_in_a_file(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("train:\n  epochs: 10\n  lr: 0.1\n  epochs: 20\n")
    _refused([], str(f), "'epochs' is given twice (lines 2 and 4)", "keep one", files=[f])
    f.write_text("train:\n  epochs: 10\ntrain:\n  lr: 0.1\n")
    _refused([], "'train' is given twice (lines 1 and 3)", files=[f])


def test_duplicate_keys_in_a_set_value():
    _refused(["model.kwargs={a: 1, a: 2}"], "--set model.kwargs={a: 1, a: 2}", "'a' is given twice")


def test_other_type_errors_name_the_file(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("train:\n  milestones: 5\n  layers: 3\n")
    _refused([], "'train.milestones' takes a list", str(f), files=[f])
    f.write_text("- 1\n- 2\n")
    _refused([], str(f), "must hold a mapping", files=[f])
    f.write_text("name: 3\n")
    _refused([], "'name' takes a string", files=[f])


# F6: Eq. 2 needs two test images ------------------------------------------------------------------


def test_n_test_must_be_at_least_two():
    _refused(["data.n_test=1"], "data.n_test", ">= 2", "Eq. 2", "docs/method.md")
    assert load_config(None, overrides=["data.n_test=2"], arm="dai").data.n_test == 2


# Where: presets and files are named in validation messages too -------------------------------------


def test_validation_names_where_the_value_came_from(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 1e39\n")
    _refused([], "invalid setting train.lr", f"(set in config file {f})", files=[f])
    _refused(["train.lr=20"], "(set in --set train.lr=20)", files=[f])  # the later source wins


# Data set specs (the registry's check when the data package has it) ---------------------------------


@pytest.mark.parametrize("spec", ["cifar10", "cifar100", "npz:/some/file.npz"])
def test_dataset_specs_accepted(spec):
    assert load_config(None, overrides=[f"data.dataset={spec}"], arm="dai").data.dataset == spec


@pytest.mark.parametrize("spec", ["mnist", "npz:", "folder"])
def test_dataset_specs_refused(spec):
    _refused([f"data.dataset={spec}"], "invalid setting data.dataset")
