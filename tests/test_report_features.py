"""The report package's statistics and features: paired bootstrap CIs, robust overhead, the figure
registry, the gap vs training length, stale evaluations, ad-hoc comparisons and atomic outputs."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from dainv import report
from dainv.cli import main
from dainv.config import ARMS
from dainv.report import figures, stats
from test_report import (
    LAYERS,
    N_IMG,
    PNG_MAGIC,
    make_repro,
    make_run,
    section,
    table_header,
    table_rows,
    unrendered,
)

# ------------------------------------------------------------------------------------------
# Paired bootstrap CI of the difference of medians
# ------------------------------------------------------------------------------------------


def brute_force_ci(a, b, n_boot, seed):
    """One resample at a time: the same image indices for both arms."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, a.shape[0], size=a.shape[0])
        diffs.append(np.median(a[idx]) - np.median(b[idx]))
    return np.percentile(diffs, [2.5, 97.5])


def test_bootstrap_ci_matches_brute_force_loop():
    rng = np.random.default_rng(0)
    a = rng.normal(0.6, 0.1, size=(23, 3))
    b = a - 0.05 + rng.normal(0, 0.05, size=(23, 3))
    ci = stats.median_diff_ci(a, b, n_boot=120, seed=7)
    lo, hi = brute_force_ci(a, b, 120, 7)
    assert ci["lo"] == pytest.approx(lo, abs=1e-12) and ci["hi"] == pytest.approx(hi, abs=1e-12)
    assert ci["diff"] == pytest.approx(np.median(a) - np.median(b))
    assert ci["paired"] and ci["n_boot"] == 120
    # Same seed → same CI; another seed → (almost surely) another one.
    assert stats.median_diff_ci(a, b, n_boot=120, seed=7) == ci
    assert stats.median_diff_ci(a, b, n_boot=120, seed=8)["lo"] != ci["lo"]


def test_bootstrap_ci_excludes_zero_only_when_arms_differ():
    rng = np.random.default_rng(1)
    base = rng.normal(0.5, 0.15, size=(300, 5))
    far = stats.median_diff_ci(base + 0.2, base)
    assert not far["includes_zero"] and far["lo"] > 0.1
    same = stats.median_diff_ci(base.copy(), base)
    assert same["includes_zero"] and same["lo"] == same["hi"] == same["diff"] == 0.0
    noise = stats.median_diff_ci(rng.normal(0.5, 0.15, size=(300, 5)), base)
    assert noise["includes_zero"]
    # Different test sets cannot be paired: each arm is resampled on its own images.
    assert not stats.median_diff_ci(base[:200], base)["paired"]


def test_bootstrap_ignores_nonfinite_scores():
    x = np.full((50, 2), 0.5)
    x[3, 1] = np.nan
    assert np.all(stats.bootstrap_medians(x, n_boot=20) == 0.5)


@pytest.fixture(scope="module")
def gap_repro(tmp_path_factory):
    """Baseline and DAI, two seeds, evaluations of the checkpoints of epochs 1 and 2 and the final."""
    root = make_repro(tmp_path_factory.mktemp("gap") / "repro", ["baseline", "dai"], [0, 1])
    for s in (0, 1):
        make_run(root, "baseline", s, epoch_times=[20.0, 10.0, 10.0], epoch_evals=(1, 2))
        make_run(root, "dai", s, epoch_times=[20.0, 11.0, 11.0], epoch_evals=(1, 2))
    with pytest.MonkeyPatch.context() as m:  # its figures are rendered by test_every_registered_figure_renders
        m.setattr(figures, "render", unrendered)
        md = report.build_report(root).read_text()
    return root, md, json.loads((root / "results.json").read_text())


def test_report_table_carries_paired_cis(gap_repro):
    root, md, res = gap_repro
    ci = res["differences"]["vs_baseline"]["dai − baseline"]["conv7"]
    # The same numbers by hand: both seeds pooled as columns of (n_images, 2·T), images resampled jointly.
    pooled = {}
    for arm in ("baseline", "dai"):
        parts = []
        for s in (0, 1):
            with np.load(root / f"{arm}-s{s}" / "eval" / "scores.npz") as z:
                parts.append(z["conv7"].astype(np.float64))
        pooled[arm] = np.concatenate(parts, axis=1)
    assert pooled["dai"].shape == (N_IMG, 10)
    expect = stats.median_diff_ci(pooled["dai"], pooled["baseline"])
    assert ci["lo"] == pytest.approx(expect["lo"]) and ci["hi"] == pytest.approx(expect["hi"])
    text = section(md, "Median invariance per layer")
    col = table_header(text).index("dai − baseline (95 % CI)") - 1
    cell = table_rows(text)["conv7"][col]
    assert cell == f"{ci['diff']:+.3f} [{ci['lo']:+.3f}, {ci['hi']:+.3f}]"
    assert table_rows(text)["input"][col].endswith("includes 0")
    # Two seeds: the spread of the per-seed medians.
    assert "Spread over seeds: mean ± sd of the per-seed medians" in text
    spread = res["invariance"]["dai"]["layers"]["conv7"]["seed_spread"]
    assert spread["n"] == 2 and spread["sd"] is not None
    assert "includes 0: no evidence of a difference" in md or "excludes 0 at 5 of them" in md


# ------------------------------------------------------------------------------------------
# Gap vs training length
# ------------------------------------------------------------------------------------------


def test_gap_vs_epochs(gap_repro):
    root, md, res = gap_repro
    gap = res["gap_vs_epochs"]
    assert gap["epochs"] == [1, 2, 3]  # eval-epoch-0001, eval-epoch-0002, the final eval/ (epoch 3)
    pts = gap["pairs"]["dai − baseline"]["conv8"]
    assert [p["epoch"] for p in pts] == [1, 2, 3]
    assert pts[0]["diff"] < pts[1]["diff"] < pts[2]["diff"]  # the synthetic lead grows
    with (
        np.load(root / "dai-s0" / "eval-epoch-0001" / "scores.npz") as d0,
        np.load(root / "dai-s1" / "eval-epoch-0001" / "scores.npz") as d1,
        np.load(root / "baseline-s0" / "eval-epoch-0001" / "scores.npz") as b0,
        np.load(root / "baseline-s1" / "eval-epoch-0001" / "scores.npz") as b1,
    ):
        d = np.median(np.concatenate([d0["conv8"], d1["conv8"]], axis=1))
        b = np.median(np.concatenate([b0["conv8"], b1["conv8"]], axis=1))
    assert pts[0]["diff"] == pytest.approx(float(d) - float(b), abs=1e-6)
    text = section(md, "Invariance gap vs training length")
    assert "| comparison | layer | epoch 1 | epoch 2 | epoch 3 |" in text
    assert "![Invariance gap vs training length](figures/fig_gap_epochs.png)" in text
    assert (root / "figures" / "fig_gap_epochs.png").read_bytes()[:8] == PNG_MAGIC


def test_no_gap_section_without_epoch_evaluations(tmp_path, monkeypatch):
    root = make_repro(tmp_path / "r", ["baseline", "dai"], [0])
    make_run(root, "baseline", 0, epoch_times=[20.0, 10.0])
    make_run(root, "dai", 0, epoch_times=[20.0, 11.0])
    monkeypatch.setattr(figures, "render", unrendered)
    md = report.build_report(root).read_text()
    assert "## Invariance gap vs training length" not in md
    assert not (root / "figures" / "fig_gap_epochs.png").exists()
    assert json.loads((root / "results.json").read_text())["gap_vs_epochs"] == {}


# ------------------------------------------------------------------------------------------
# Overhead from median epoch times, with the machine load
# ------------------------------------------------------------------------------------------


def test_overhead_from_medians_and_loaded_machine(tmp_path, monkeypatch):
    root = make_repro(tmp_path / "r", ["baseline", "dai"], [0])
    # One outlier epoch each (another job on the machine): the medians ignore it, a mean would not.
    make_run(root, "baseline", 0, epoch_times=[50.0, 10.0, 10.0, 30.0, 10.0], load_avg=1.5)
    make_run(root, "dai", 0, epoch_times=[50.0, 11.0, 11.0, 11.0, 2.0], load_avg=3.0)
    tt = report.overhead_stats(report.load_reproduction(root))
    base, dai = tt["arms"]["baseline"], tt["arms"]["dai"]
    assert base["median_epoch_time_s"] == 10.0 and dai["median_epoch_time_s"] == 11.0
    assert tt["overhead_vs_baseline"]["dai"]["percent"] == pytest.approx(10.0)
    # samples/s consistent with the median time: 50,000 samples per epoch / 11 s.
    assert dai["samples_per_s"] == pytest.approx(50000 / 11.0)
    assert dai["load"] == {"recorded": True, "max_load_avg": 3.0, "cpu_count": 2, "overloaded": True}
    assert not base["load"]["overloaded"]
    o = tt["overhead_vs_baseline"]["dai"]
    assert o["overloaded"] and not o["reliable"]
    monkeypatch.setattr(figures, "render", unrendered)
    md = report.build_report(root).read_text()
    text = section(md, "Training-time overhead of DAI")
    assert table_rows(text)["dai"][3] == "+10.0 % (unreliable)"
    assert "OVERLOADED: max load 3.0 on 2 cores" in text
    assert "is **unreliable**" in text and "**+10.0 %**" not in text
    assert "`make bench`" in text


def test_overhead_without_load_record(tmp_path, monkeypatch):
    root = make_repro(tmp_path / "r", ["baseline", "dai"], [0])
    make_run(root, "baseline", 0, epoch_times=[20.0, 10.0], load_avg=None)
    make_run(root, "dai", 0, epoch_times=[20.0, 12.0], load_avg=None)
    monkeypatch.setattr(figures, "render", unrendered)
    text = section(report.build_report(root).read_text(), "Training-time overhead of DAI")
    assert table_rows(text)["dai"][3] == "+20.0 % (load not recorded)"
    assert table_rows(text)["dai"][5] == "load not recorded"
    assert "**+20.0 %**" in text and "load not recorded" in text


# ------------------------------------------------------------------------------------------
# The figure registry
# ------------------------------------------------------------------------------------------


def test_every_registered_figure_renders(gap_repro):
    root, _, _ = gap_repro
    repro = report.load_reproduction(root)
    res = report.collect_results(repro)
    res["per_transform"] = {"dai": {"seeds": [0], "values": {"rotation": {"conv1": 0.5, "conv2": 0.7}}}}
    assert [f.name for f in figures.FIGURES] == list(report.FIGURE_NAMES)
    assert len(set(report.FIGURE_NAMES)) == len(report.FIGURE_NAMES) >= 5
    for spec in figures.FIGURES:
        assert spec.title and spec.caption and spec.missing
        png, svg = figures.render(spec.draw(repro, res))
        assert png[:8] == PNG_MAGIC and len(png) > 5_000, spec.name
        assert b"<svg" in svg[:1000], spec.name


def test_a_new_figure_is_one_entry(tmp_path, monkeypatch):
    # Registered alone: the other figures (seconds each) are rendered by the tests above.
    monkeypatch.setattr(figures, "FIGURES", [])
    monkeypatch.setattr(figures, "FIGURE_NAMES", [])

    @figures.register("fig_extra", "An extra figure", "Its caption.", "never missing")
    def draw(repro, res):
        fig = figures.new_figure((3, 2))
        fig.add_subplot().plot([0, 1], [0, 1])
        return fig

    root = make_repro(tmp_path / "r", ["baseline", "dai"], [0])
    make_run(root, "baseline", 0, epoch_times=[20.0, 10.0])
    make_run(root, "dai", 0, epoch_times=[20.0, 11.0])
    md = report.build_report(root).read_text()
    assert "### An extra figure" in md and "![An extra figure](figures/fig_extra.png)" in md
    assert (root / "figures" / "fig_extra.png").read_bytes()[:8] == PNG_MAGIC


# ------------------------------------------------------------------------------------------
# Stale evaluations
# ------------------------------------------------------------------------------------------


def _rewrite_checkpoint(run: Path, **ck) -> None:
    path = run / "eval" / "summary.json"
    summary = json.loads(path.read_text())
    if ck.get("drop"):
        del summary["checkpoint"]
    else:
        summary["checkpoint"].update(ck)
    path.write_text(json.dumps(summary))


@pytest.mark.parametrize(
    "change, why",
    [
        ({"final": False, "epoch": 1}, "not the final one (epoch 1 of 3)"),
        ({"epoch": 1}, "the checkpoint of epoch 1 of 3, not the final one"),
        ({"drop": True}, "does not record which checkpoint it scored"),
    ],
)
def test_stale_evaluation_is_flagged(tmp_path, monkeypatch, change, why):
    root = make_repro(tmp_path / "r", ["baseline", "dai"], [0])
    make_run(root, "baseline", 0, epoch_times=[20.0, 10.0, 10.0])
    make_run(root, "dai", 0, epoch_times=[20.0, 11.0, 11.0])
    _rewrite_checkpoint(root / "dai-s0", **change)
    assert why in report.load_run(root / "dai-s0").stale_reason
    assert report.load_run(root / "baseline-s0").stale_reason is None
    if "final" not in change:
        return  # the report's wording is checked once (it is the same for every reason)
    monkeypatch.setattr(figures, "render", unrendered)
    md = report.build_report(root).read_text()
    assert "Warning — stale evaluations, NOT the final checkpoints" in md.split("## ")[0]
    assert why in md
    assert "dai (NOT final)" in table_header(section(md, "Median invariance per layer"))
    missing = section(md, "Missing or unfinished")
    assert "**dai** — seed 0:" in missing and "STALE EVALUATION" in missing
    assert "Nothing missing" not in md
    assert "Stale evaluations:" in section(md, "What this shows")
    res = json.loads((root / "results.json").read_text())
    assert "0" in res["invariance"]["dai"]["stale"] and not res["invariance"]["baseline"]["stale"]
    assert why in res["runs"]["dai"]["0"]["stale_evaluation"]


def test_changed_final_checkpoint_is_flagged(tmp_path):
    root = make_repro(tmp_path / "r", ["baseline", "dai"], [0])
    make_run(root, "baseline", 0, epoch_times=[20.0, 10.0])
    run = make_run(root, "dai", 0, epoch_times=[20.0, 11.0])
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "final.pt").write_bytes(b"a newer checkpoint")  # hash != the recorded one
    assert "content hashes differ" in report.load_run(run).stale_reason
    assert report.load_run(root / "baseline-s0").stale_reason is None


# ------------------------------------------------------------------------------------------
# `dainv report RUN_A RUN_B …` and atomic outputs
# ------------------------------------------------------------------------------------------


def _free_run(path: Path, arm: str, **kw) -> Path:
    run = make_run(path.parent, arm, 0, **kw)
    run.rename(path)
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    cfg["name"] = path.name
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return path


def test_report_of_two_run_folders_through_the_cli(tmp_path, capsys, monkeypatch):
    a = _free_run(tmp_path / "runs" / "mine-plain", "baseline", epoch_times=[20.0, 10.0])
    b = _free_run(tmp_path / "runs" / "mine-dai", "dai", epoch_times=[20.0, 11.0])
    out = tmp_path / "cmp"
    monkeypatch.setattr(figures, "render", unrendered)  # drawn as for a reproduction; rendered there
    rc = main(["report", str(a), str(b), "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert rc == 0, stderr
    assert stdout.split() == [str(out / "report.md"), str(out / "report.html")]
    md = (out / "report.md").read_text()
    assert md.startswith("# Data augmentation invariance — comparison of runs")
    assert "longer presets" not in md  # no reproduction preset to speak of
    # Arms inferred from views/alpha (dainv.config.ARMS), medians and CIs as for a reproduction.
    res = json.loads((out / "results.json").read_text())
    assert res["arms"] == ["baseline", "dai"] and set(ARMS) >= set(res["arms"])
    assert "dai − baseline" in res["differences"]["vs_baseline"]
    assert res["runs"]["baseline"]["0"]["folder"] == a.name  # its name: no machine's path in a report
    assert "data:image/png;base64," in (out / "report.html").read_text()
    # Runs that match no arm keep their names.
    cfg = yaml.safe_load((b / "config.yaml").read_text())
    cfg["train"]["alpha"] = 0.5
    (b / "config.yaml").write_text(yaml.safe_dump(cfg))
    repro = report.load_runs([a, b], tmp_path / "x")
    assert repro.arms == ["baseline", "mine-dai"]


def test_report_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    run = _free_run(tmp_path / "r1", "dai", epoch_times=[20.0])
    assert main(["report", str(run), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a reproduction folder" in err and "nor a run folder" in err and "Traceback" not in err


def _no_partial_files(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            assert p.stat().st_size > 0, p
            assert not p.name.endswith(".tmp"), p


def test_full_disk_gives_one_message_and_no_partial_file(tmp_path, monkeypatch, capsys):
    root = make_repro(tmp_path / "r", ["baseline", "dai"], [0])
    make_run(root, "baseline", 0, epoch_times=[20.0, 10.0])
    make_run(root, "dai", 0, epoch_times=[20.0, 11.0])
    real = os.replace

    def full(src, dst, *a, **k):
        if str(dst).endswith((".png", ".svg", ".md", ".html", "results.json")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", full)
    assert main(["report", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dainv: error: no space left on device while writing") and "Traceback" not in err
    assert not (root / "report.md").exists()
    _no_partial_files(root)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path, capsys):
    a = _free_run(tmp_path / "a", "baseline", epoch_times=[20.0, 10.0])
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["report", str(a), "--out", str(out)]) == 2
    finally:
        out.chmod(0o755)
    err = capsys.readouterr().err
    assert "permission denied" in err and "Traceback" not in err
    _no_partial_files(out)


def test_layers_come_from_the_data(tmp_path):
    """A network with other layer names: tables, findings and figures follow the data."""
    root = make_repro(tmp_path / "r", ["baseline", "dai"], [0])
    for arm, shift in (("baseline", 0.0), ("dai", 0.3)):
        run = make_run(root, arm, 0, epoch_times=[20.0, 10.0])
        rng = np.random.default_rng(0)
        names = ["input", "block1", "block2", "block3"]
        scores = {n: (rng.normal(0.5, 0.1, (N_IMG, 5)) + shift * (i > 0)).astype(np.float32) for i, n in enumerate(names)}
        np.savez(run / "eval" / "scores.npz", **scores)
        s = json.loads((run / "eval" / "summary.json").read_text())
        s["invariance"] = {"layers": names, "n_images": N_IMG, "n_transforms": 5,
                           "median": {n: float(np.median(v)) for n, v in scores.items()}}
        (run / "eval" / "summary.json").write_text(json.dumps(s))
    md = report.build_report(root).read_text()
    rows = table_rows(section(md, "Median invariance per layer"))
    assert list(rows)[1:] == ["input", "block1", "block2", "block3"]
    assert "at block2–block3" in section(md, "What this shows")
    assert not set(LAYERS[1:]) & set(rows)


def test_out_that_is_a_file(tmp_path, capsys):
    a = _free_run(tmp_path / "a", "baseline", epoch_times=[20.0, 10.0])
    (tmp_path / "taken").write_text("a file")
    assert main(["report", str(a), "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dainv: error: cannot write") and "Traceback" not in err
    assert (tmp_path / "taken").read_text() == "a file"
