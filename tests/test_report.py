"""The reproduction report (dainv.report) on synthetic reproduction folders."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from dainv import report
from dainv.errors import RunError

LAYERS = ["input"] + [f"conv{i}" for i in range(1, 10)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# 50 test images × 5 transformations per layer: the statistics' code paths and their numbers
# are checked against numpy; more images only slow every report's bootstrap down.
N_IMG, N_TR = 50, 5
TRANSFORMS = ["rotation", "translation", "zoom", "shear", "flip", "brightness", "contrast"]

# Target medians of the synthetic scores per arm (the real medians are measured in the tests).
CENTRES = {
    "baseline": np.linspace(0.55, 0.40, 10),
    "dai": np.linspace(0.55, 0.95, 10),
    "control": np.linspace(0.55, 0.60, 10),
}


def unrendered(fig) -> tuple[bytes, bytes]:
    """Stand-in for ``dainv.report.figures.render`` in tests of the report's text, tables and
    results: every figure is still drawn (its data, caption and "Not drawn" note), only not
    rendered to PNG/SVG (seconds per report). Rendering is tested by
    :func:`test_build_report_writes_all_files`, ``test_unfinished_and_missing_runs_reported`` and
    test_report_features (every registered figure, the gap figure, other layer names, the CLI)."""
    return PNG_MAGIC + b"unrendered", b"<svg/>"


def make_run(
    root: Path,
    arm: str,
    seed: int,
    *,
    epoch_times: list[float],
    planned_epochs: int | None = None,
    test_accs: list[float] | None = None,
    single_view: float | None = 0.9,
    light_tta: float | None = 0.91,
    evaluated: bool = True,
    finished: bool = True,
    per_transform: bool = True,
    epoch_evals: tuple[int, ...] = (),
    load_avg: float | None = 1.0,
) -> Path:
    """Write one synthetic run folder ``ARM-sSEED`` and return it."""
    run = root / f"{arm}-s{seed}"
    run.mkdir(parents=True)
    n_ep = len(epoch_times)
    cfg = {
        "name": arm,
        "seed": seed,
        "model": {"name": "allcnnc", "width": 1.0},
        "data": {"root": "data"},
        "train": {
            "epochs": planned_epochs or n_ep,
            "views": 1 if arm == "baseline" else 8,
            "batch_size": 128,
            "alpha": 0.1 if arm == "dai" else 0.0,
            "precision": "fp32",
        },
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "meta.json").write_text(
        json.dumps(
            {
                "status": "finished" if finished else "running",
                "started": "2025-01-01T00:00:00",
                "finished": "2025-01-01T01:00:00" if finished else None,
                "wall_time_s": float(sum(epoch_times)) + 5.0,
                "train_time_s": float(sum(epoch_times)),
                "device": "cpu",
                "torch": "2.13.0",
                "git_commit": "abc123",
            }
        )
    )
    test_accs = test_accs or [0.3 + 0.05 * e for e in range(n_ep)]
    with (run / "metrics.jsonl").open("w") as f:
        for e, (t, acc) in enumerate(zip(epoch_times, test_accs), start=1):
            sign = -1 if arm == "dai" else 1
            dai = {f"conv{i}": 0.4 * (1 + sign * 0.05 * e) * (1 + 0.1 * i) for i in range(1, 10)}
            row = {
                "epoch": e,
                "step": 391 * e,
                "lr": 0.01,
                "train_ce": 1.9,
                "train_loss": 1.95,
                "train_acc": acc + 0.05,
                "dai": dai,
                "test_acc": acc,
                "epoch_time_s": t,
                "samples_per_s": 50000 / t,
            }
            if load_avg is not None:  # older runs did not record the machine load
                row.update(load_avg=load_avg, cpu_count=2)
            f.write(json.dumps(row) + "\n")
    if not evaluated:
        return run
    for e in epoch_evals:  # evaluations of kept checkpoints: DAI's lead grows with the epochs
        write_eval(run / f"eval-epoch-{e:04d}", arm, seed, epoch=e, final=False, frac=e / (n_ep + 1))
    write_eval(
        run / "eval",
        arm,
        seed,
        epoch=n_ep,
        final=True,
        single_view=single_view,
        light_tta=light_tta,
        per_transform=per_transform,
    )
    return run


def write_eval(
    folder: Path,
    arm: str,
    seed: int,
    *,
    epoch: int,
    final: bool,
    frac: float = 1.0,
    single_view: float | None = 0.9,
    light_tta: float | None = 0.91,
    per_transform: bool = False,
) -> dict:
    """One evaluation folder (summary.json with its checkpoint record, scores.npz)."""
    rng = np.random.default_rng([zlib.crc32(arm.encode()), seed, epoch])
    centre = CENTRES["baseline"] + frac * (CENTRES[arm] - CENTRES["baseline"])
    scores = {
        layer: rng.normal(centre[i], 0.15, size=(N_IMG, N_TR)).astype(np.float32)
        for i, layer in enumerate(LAYERS)
    }
    folder.mkdir()
    np.savez(folder / "scores.npz", **scores)
    summary = {
        "accuracy": {"single_view": single_view, "light_tta10": light_tta},
        "invariance": {
            "layers": LAYERS,
            "n_images": N_IMG,
            "n_transforms": N_TR,
            "median": {k: float(np.median(v)) for k, v in scores.items()},
            "q1": {k: float(np.percentile(v, 25)) for k, v in scores.items()},
            "q3": {k: float(np.percentile(v, 75)) for k, v in scores.items()},
            "mean": {k: float(np.mean(v)) for k, v in scores.items()},
        },
        "protocol": {"scheme": "heavier_eval", "seed": 0},
        "checkpoint": {
            "path": "checkpoints/final.pt" if final else f"checkpoints/epoch-{epoch:04d}.pt",
            "epoch": epoch,
            "step": 391 * epoch,
            "sha256": "0" * 64,
            "final": final,
        },
    }
    if per_transform:
        summary["per_transform"] = {
            t: {layer: float(CENTRES[arm][i] - 0.03 * j) for i, layer in enumerate(LAYERS)}
            for j, t in enumerate(TRANSFORMS)
        }
    (folder / "summary.json").write_text(json.dumps(summary))
    return summary


def make_repro(root: Path, arms: list[str], seeds: list[int], preset: str = "quick") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    manifest = {
        "preset": preset,
        "arms": arms,
        "seeds": seeds,
        "runs": {a: {str(s): f"{a}-s{s}" for s in seeds} for a in arms},
        "preset_note": "Smoke test: a few epochs, nothing comparable to the paper.",
        "machine": {
            "platform": "Linux-x86_64",
            "cpu": "test cpu",
            "device": "cpu",
            "torch": "2.13.0",
            "python": "3.11.7",
            "dainv": "0.1.0",
            "git_commit": "abc123def",
        },
    }
    (root / "reproduce.json").write_text(json.dumps(manifest))
    return root


def section(md: str, title: str) -> str:
    """The text of the Markdown section ``## title`` up to the next ``## ``."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", md, re.M | re.S)
    assert m, f"no section {title!r}"
    return m.group(1)


def table_rows(text: str) -> dict[str, list[str]]:
    """First cell → remaining cells of the rows of the first Markdown table in ``text``."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
        elif rows and not line.startswith("|"):
            break
    return rows


def table_header(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith("| "))
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """Three finished arms, one seed: baseline epoch 10 s, DAI 11 s, control 12 s (epoch 1 slow)."""
    root = make_repro(
        tmp_path_factory.mktemp("full") / "repro", ["baseline", "dai", "control"], [0]
    )
    kw = {"epoch_evals": (1, 2)}
    make_run(
        root, "baseline", 0, epoch_times=[30.0, 10.0, 10.0], single_view=0.9012, light_tta=0.9134, **kw
    )
    make_run(
        root, "dai", 0, epoch_times=[55.0, 11.0, 11.0], single_view=0.9187, light_tta=0.9241, **kw
    )
    make_run(
        root, "control", 0, epoch_times=[60.0, 12.0, 12.0], single_view=0.9055, light_tta=0.9101, **kw
    )
    md_path = report.build_report(root)
    return root, md_path, md_path.read_text(encoding="utf-8")


def test_build_report_writes_all_files(full):
    root, md_path, _ = full
    assert md_path == root / "report.md"
    for name in report.FIGURE_NAMES:
        png = root / "figures" / f"{name}.png"
        svg = root / "figures" / f"{name}.svg"
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 15_000, name
        text = svg.read_text(encoding="utf-8")
        assert "<svg" in text[:1000] and len(text) > 15_000, name
    assert (root / "report.html").is_file()
    assert (root / "results.json").is_file()


def test_accuracy_table(full):
    _, _, md = full
    rows = table_rows(section(md, "Test accuracy"))
    assert rows["baseline"][:2] == ["90.12 %", "91.34 %"]
    assert rows["dai"][:2] == ["91.87 %", "92.41 %"]
    assert rows["control"][:2] == ["90.55 %", "91.01 %"]
    # Paper numbers beside them (CCN, thesis); the control has none.
    assert rows["baseline"][-2:] == ["91.5 %", "91.48 %"]
    assert rows["dai"][-2:] == ["92.2 %", "92.47 %"]
    assert rows["control"][-2:] == ["—", "—"]


def test_overhead_excludes_first_epoch(full):
    _, _, md = full
    text = section(md, "Training-time overhead of DAI")
    rows = table_rows(text)
    # (11 / 10 − 1) = +10.0 %; with epoch 1 included it would be (77/3)/(50/3) − 1 = +54.0 %.
    assert rows["dai"][3] == "+10.0 %"
    assert rows["control"][3] == "+20.0 %"
    assert rows["baseline"][1] == "10.00 s"
    assert "overhead: **+10.0 %**" in text


def test_median_table_matches_scores(full):
    root, _, md = full
    text = section(md, "Median invariance per layer")
    header = table_header(text)
    rows = table_rows(text)
    for arm in ("baseline", "dai", "control"):
        with np.load(root / f"{arm}-s0" / "eval" / "scores.npz") as z:
            col = header.index(arm) - 1
            for layer in LAYERS:
                assert rows[layer][col] == f"{np.median(z[layer]):.3f}", (arm, layer)
    # Paper medians beside them; conv9 has none.
    pcol = header.index("paper dai") - 1
    assert rows["conv5"][pcol] == "0.95"
    assert rows["conv9"][pcol] == "—"


def test_html_is_self_contained(full):
    root, _, _ = full
    page = (root / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == len(report.FIGURE_NAMES)
    assert 'src="figures/' not in page
    assert "<table>" in page and "<td" in page
    assert "90.12 %" in page


def test_results_json_matches(full):
    root, _, _ = full
    res = json.loads((root / "results.json").read_text())
    assert res["accuracy"]["dai"]["single_view"]["mean"] == pytest.approx(0.9187)
    assert res["accuracy"]["baseline"]["light_tta10"]["mean"] == pytest.approx(0.9134)
    assert res["training_time"]["overhead_vs_baseline"]["dai"]["percent"] == pytest.approx(10.0)
    assert res["training_time"]["arms"]["dai"]["mean_epoch_time_s"] == pytest.approx(11.0)
    with np.load(root / "dai-s0" / "eval" / "scores.npz") as z:
        med = res["invariance"]["dai"]["layers"]["conv7"]["median"]
        assert med == pytest.approx(float(np.median(z["conv7"])), abs=1e-6)
        assert res["invariance"]["dai"]["layers"]["conv7"]["n_scores"] == z["conv7"].size
    assert res["paper_medians"]["dai"]["conv4"] == 0.87
    assert res["missing"] == {}
    assert set(res["figures"]) == set(report.FIGURE_NAMES)


def test_findings_compare_deep_layers(full):
    root, _, md = full
    text = section(md, "What this shows")
    assert report.finding_layers(LAYERS) == ["conv5", "conv6", "conv7", "conv8", "conv9"]
    for layer in report.finding_layers(LAYERS):
        with (
            np.load(root / "dai-s0/eval/scores.npz") as d,
            np.load(root / "baseline-s0/eval/scores.npz") as b,
        ):
            md_, mb = float(np.median(d[layer])), float(np.median(b[layer]))
        assert f"`{layer}` DAI {md_:.3f} vs baseline {mb:.3f}: above by {md_ - mb:.3f}" in text
    assert "above the baseline's at 5 of 5 layers" in text
    # Preset quick: the plain statement about the longer presets.
    assert "needs the longer presets (`cpu-short`, `paper`)" in text
    assert "0.87–0.99" in text
    assert "Nothing missing" in section(md, "Missing or unfinished")


def test_setup_lists_machine_and_note(full):
    _, _, md = full
    setup = section(md, "Setup")
    assert "git commit: `abc123def`" in setup
    assert "torch: 2.13.0" in setup
    assert "Smoke test: a few epochs" in md
    rows = table_rows(setup)
    assert rows["dai"][3] == "3 / 3"  # epochs logged / planned
    assert rows["dai"][4] == "82.0 s"  # wall time: 77 s of epochs + 5 s


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Preset paper, seeds 0 and 1, no per-transform medians: baseline and DAI finished; the
    control's seed 0 unfinished (no eval/, partial last metrics line), its seed 1 never started."""
    root = make_repro(
        tmp_path_factory.mktemp("mixed") / "repro",
        ["baseline", "dai", "control"],
        [0, 1],
        preset="paper",
    )
    kw = {"per_transform": False, "epoch_evals": (1,)}
    make_run(root, "baseline", 0, epoch_times=[20.0, 10.0], single_view=0.90, light_tta=0.91, **kw)
    make_run(root, "baseline", 1, epoch_times=[20.0, 10.0], single_view=0.92, light_tta=0.93, **kw)
    make_run(root, "dai", 0, epoch_times=[20.0, 12.0], single_view=0.80, light_tta=0.81, **kw)
    make_run(root, "dai", 1, epoch_times=[20.0, 12.0], single_view=0.84, light_tta=0.85, **kw)
    make_run(
        root,
        "control",
        0,
        epoch_times=[20.0, 13.0],
        planned_epochs=5,
        evaluated=False,
        finished=False,
    )
    with (root / "control-s0" / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 3, "step": 11')  # a partial last line, as a run being written leaves it
    md_path = report.build_report(root)
    return root, md_path, md_path.read_text(encoding="utf-8")


def test_unfinished_and_missing_runs_reported(mixed):
    root, _, md = mixed
    missing = section(md, "Missing or unfinished")
    assert "**control** — seed 0:" in missing
    assert "not evaluated" in missing
    assert "2 of 5 epochs logged" in missing
    assert "not finished" in missing
    assert "partial last line" in missing
    assert "seed 1: run folder `control-s1` does not exist" in missing
    assert "**baseline**" not in missing and "**dai**" not in missing
    acc = table_rows(section(md, "Test accuracy"))
    assert acc["control"][0] == "—" and acc["control"][1] == "—"
    assert acc["control"][2] == "35.00 % at epoch 2"  # last logged test_acc, labelled
    # The overhead still uses the epochs that exist: 13 / 10 − 1.
    assert table_rows(section(md, "Training-time overhead of DAI"))["control"][3] == "+30.0 %"
    assert "control: no invariance scores" in section(md, "Median invariance per layer")
    # Figures still drawn from what exists.
    assert (root / "figures" / "fig1_invariance.png").read_bytes()[:8] == PNG_MAGIC
    setup = table_rows(section(md, "Setup"))
    assert setup["control"][2] == "missing"  # the last control row: seed 1
    res = json.loads((root / "results.json").read_text())
    assert res["accuracy"]["control"]["single_view"]["n"] == 0
    assert "control" not in res["invariance"]
    assert res["runs"]["control"]["1"]["exists"] is False


def test_two_seeds_mean_sd(mixed):
    root, _, md = mixed
    rows = table_rows(section(md, "Test accuracy"))
    # sd (ddof=1) of {0.90, 0.92} = 0.01414 → 1.41 points.
    assert rows["baseline"][0] == "91.00 ± 1.41 % (n=2)"
    assert rows["dai"][1] == "83.00 ± 2.83 % (n=2)"
    assert table_rows(section(md, "Training-time overhead of DAI"))["dai"][3] == "+20.0 %"
    # Medians pool both seeds.
    text = section(md, "Median invariance per layer")
    col = table_header(text).index("baseline") - 1
    pooled = []
    for s in (0, 1):
        with np.load(root / f"baseline-s{s}" / "eval" / "scores.npz") as z:
            pooled.append(z["conv3"].ravel())
    assert table_rows(text)["conv3"][col] == f"{np.median(np.concatenate(pooled)):.3f}"
    res = json.loads((root / "results.json").read_text())
    sv = res["accuracy"]["baseline"]["single_view"]
    assert sv["n"] == 2
    assert sv["mean"] == pytest.approx(0.91)
    assert sv["sd"] == pytest.approx(np.std([0.90, 0.92], ddof=1))
    assert sv["values"] == {"0": 0.90, "1": 0.92}
    inv = res["invariance"]["baseline"]["layers"]["conv3"]
    assert inv["n_scores"] == 2 * N_IMG * N_TR
    assert inv["median"] == pytest.approx(float(np.median(np.concatenate(pooled))), abs=1e-6)


def test_preset_paper_and_no_per_transform(mixed):
    root, _, md = mixed
    # Preset paper: no statement about the longer presets.
    assert "longer presets" not in md
    assert not (root / "figures" / "fig_per_transform.png").exists()
    assert "no `per_transform` medians" in md
    page = (root / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(report.FIGURE_NAMES) - 1
    assert "Wall time per arm (sum over seeds): baseline 70.0 s (2 runs)" in md


def test_findings_without_dai_scores(tmp_path):
    root = make_repro(tmp_path / "r", ["baseline", "dai"], [0])
    make_run(root, "baseline", 0, epoch_times=[20.0, 10.0])
    make_run(root, "dai", 0, epoch_times=[20.0, 11.0], evaluated=False, finished=False)
    repro = report.load_reproduction(root)
    text = " ".join(report.findings(repro))
    assert "no invariance scores for `dai`" in text
    assert "longer presets" in text
    assert "dai" in report.missing_sentences(repro)
    assert "baseline" not in report.missing_sentences(repro)


def test_overhead_needs_baseline(tmp_path):
    root = make_repro(tmp_path / "r", ["baseline", "dai"], [0])
    make_run(root, "dai", 0, epoch_times=[20.0, 11.0])
    repro = report.load_reproduction(root)
    tt = report.overhead_stats(repro)
    assert tt["overhead_vs_baseline"] == {}
    assert tt["arms"]["dai"]["mean_epoch_time_s"] == pytest.approx(11.0)
    assert repro.runs["baseline"][0] is None


def test_load_run_and_errors(tmp_path):
    with pytest.raises(RunError):
        report.load_run(tmp_path / "nope")
    with pytest.raises(RunError):
        report.load_reproduction(tmp_path / "nope")
    run = make_run(tmp_path, "dai", 3, epoch_times=[5.0, 6.0])
    r = report.load_run(run)
    assert r.arm == "dai" and r.seed == 3
    assert r.finished and r.evaluated and r.epochs_done == 2 and r.epochs_planned == 2
    assert set(r.scores) == set(LAYERS) and r.scores["conv1"].shape == (N_IMG, N_TR)
    assert [m["epoch"] for m in r.metrics] == [1, 2]


def test_reproduction_without_manifest(tmp_path):
    make_run(tmp_path, "baseline", 0, epoch_times=[10.0])
    make_run(tmp_path, "dai", 0, epoch_times=[11.0])
    repro = report.load_reproduction(tmp_path)
    assert repro.arms == ["baseline", "dai"] and repro.seeds == [0]
    # One epoch only: it is used (nothing to leave out).
    tt = report.overhead_stats(repro)
    assert tt["overhead_vs_baseline"]["dai"]["percent"] == pytest.approx(10.0)


def test_paper_constants():
    assert report.PAPER_ACCURACY == {"baseline": 0.915, "dai": 0.922}
    assert len(report.PAPER_MEDIANS["dai"]) == len(report.PAPER_MEDIAN_LAYERS) == 9
    assert report.PAPER_MEDIAN_LAYERS[-1] == "conv8"


def test_overhead_of_arms_trained_side_by_side_is_flagged(tmp_path, monkeypatch):
    """`reproduce --parallel` lists the runs it trained at once; their epoch times include each
    other's work, so the overhead is reported but marked unreliable (table and text)."""
    root = make_repro(tmp_path / "r", ["baseline", "dai"], [0])
    make_run(root, "baseline", 0, epoch_times=[20.0, 10.0, 10.0])
    make_run(root, "dai", 0, epoch_times=[20.0, 22.0, 22.0])
    alone = report.overhead_stats(report.load_reproduction(root))["overhead_vs_baseline"]["dai"]
    m = json.loads((root / "reproduce.json").read_text())
    (root / "reproduce.json").write_text(json.dumps({**m, "trained_concurrently": ["baseline-s0", "dai-s0"]}))
    together = report.overhead_stats(report.load_reproduction(root))["overhead_vs_baseline"]["dai"]
    assert alone["percent"] == together["percent"] == pytest.approx(120.0)
    assert not alone["concurrent"] and together["concurrent"] and not together["reliable"]
    monkeypatch.setattr("dainv.report.figures.render", unrendered)
    md = (report.build_report(root)).read_text()
    text = section(md, "Training-time overhead of DAI")
    assert table_rows(text)["dai"][3] == "+120.0 % (trained side by side)"
    assert "side by side on one device" in text and "**unreliable**" in text


def test_settings_changed_from_the_preset_are_shown(tmp_path, monkeypatch):
    """A reproduction made with --set says so under the preset's description and in Setup."""
    root = make_repro(tmp_path / "r", ["baseline"], [0])
    make_run(root, "baseline", 0, epoch_times=[10.0, 10.0])
    m = json.loads((root / "reproduce.json").read_text())
    sets = ["train.epochs=50", "data.dataset=npz:sub.npz", "data.root=/x", "device=cuda"]
    (root / "reproduce.json").write_text(json.dumps({**m, "overrides": sets}))
    monkeypatch.setattr("dainv.report.figures.render", unrendered)
    md = report.build_report(root).read_text()
    assert "**Changed from the preset** (`--set`): `train.epochs=50`, `data.dataset=npz:sub.npz`." in md
    assert "changed from the preset (`--set`): `train.epochs=50`, `data.dataset=npz:sub.npz`" in section(md, "Setup")
    assert "data.root=/x" not in md
    res = json.loads((root / "results.json").read_text())
    assert res["overrides"] == ["train.epochs=50", "data.dataset=npz:sub.npz"]


def test_box_statistics_are_what_matplotlib_draws():
    """The report's box statistics (one home: dainv.measure.summarise) against matplotlib's
    own boxplot_stats, which ax.bxp draws, on skewed data with outliers."""
    import numpy as np
    from matplotlib import cbook

    from dainv.report.stats import box_stats

    x = np.concatenate([np.random.default_rng(0).gamma(2.0, 0.1, 999), [3.0, -1.0]])
    ref = cbook.boxplot_stats(x, whis=1.5)[0]
    got = box_stats(x)
    for k, r in (("median", "med"), ("q1", "q1"), ("q3", "q3"), ("mean", "mean"), ("whislo", "whislo"), ("whishi", "whishi")):
        assert got[k] == pytest.approx(float(ref[r]), rel=1e-12), k
