"""The command line: help texts, a train-evaluate round trip, and clear errors without tracebacks."""

from __future__ import annotations

import pytest

from dainv.cli import build_parser, main


@pytest.mark.parametrize("sub", ["train", "evaluate", "reproduce", "report", "presets"])
def test_help_texts(sub, capsys):
    with pytest.raises(SystemExit) as e:
        main([sub, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: dainv" in out and sub in out


def test_top_level_help_lists_commands(capsys):
    text = build_parser().format_help()
    for sub in ("train", "evaluate", "reproduce", "report", "presets"):
        assert sub in text
    assert main([]) == 2


def test_train_then_evaluate(tmp_path, cifar_root, tiny_overrides, capsys):
    """The CLI end to end with the default data set: the real CIFAR-10 from $DAINV_DATA."""
    run = tmp_path / "run"
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    assert main(["train", "--arm", "dai", "--epochs", "1", "--out", str(run), "--quiet", *sets]) == 0
    assert "finished" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--n-test", "32", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "median invariance per layer" in out and "conv9" in out
    assert (run / "eval" / "summary.json").is_file()


def test_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["train", "--set", "train.batch_size=100", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dainv: error: invalid setting train.batch_size") and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing started
    with pytest.raises(Exception, match="train.batch_size"):
        main(["--debug", "train", "--set", "train.batch_size=100", "--out", str(tmp_path / "r")])
    with pytest.raises(Exception, match="train.batch_size"):  # the flag after the command too
        main(["train", "--debug", "--set", "train.batch_size=100", "--out", str(tmp_path / "r")])
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a reproduction folder" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a dainv run folder" in capsys.readouterr().err
