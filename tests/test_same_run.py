"""One "same run?" rule (dainv.config.differences) behind resume, checkpoint loading,
reproduce and the report: what it lets differ, and that every user of it agrees."""

from __future__ import annotations

import pytest
import yaml

from dainv.config import RESULT_NEUTRAL, differences, load_config, to_dict
from dainv.errors import RunError

NEUTRAL = [("device", "cpu"), ("train.log_every", 7), ("train.keep_epochs", [1]), ("train.compile", True),
           ("name", "other"), ("train.monitor_every", 3)]  # fmt: skip
RESULT = [("train.lr", 0.05), ("seed", 3), ("model.width", 0.5), ("augment.interpolation", "nearest"),
          ("train.denominator", "same_class")]  # fmt: skip


def _pair(key, value):
    fixed = ["train.precision=fp32"]  # as a run's config.yaml holds it (auto resolved)
    base = load_config("quick", overrides=fixed, arm="dai")
    other = load_config("quick", overrides=[*fixed, f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"], arm="dai")
    return base, other


@pytest.mark.parametrize(("key", "value"), NEUTRAL)
def test_settings_that_do_not_change_results_may_differ(key, value):
    assert key in RESULT_NEUTRAL
    assert differences(*_pair(key, value)) == []


@pytest.mark.parametrize(("key", "value"), RESULT)
def test_settings_that_change_results_make_another_run(key, value, tmp_path):
    from dainv.checkpoint import check_resumable
    from dainv.reproduce import config_diff

    base, other = _pair(key, value)
    assert [d[0] for d in differences(other, base)] == [key]
    # every user of the rule says so, naming the key
    with pytest.raises(RunError, match=key.replace(".", r"\.")):
        check_resumable({"model": {}, "config": {}}, to_dict(other), to_dict(base), tmp_path / "last.pt")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(to_dict(base)))
    assert [d.split(" = ")[0] for d in config_diff(other, tmp_path)] == [key]


def test_the_length_may_differ_only_where_a_run_is_extended():
    base, longer = _pair("train.epochs", 99)
    assert [d[0] for d in differences(longer, base)] == ["train.epochs"]
    assert differences(longer, base, length=False) == []
