"""The report a newcomer reads, one group per fault class:

1. the result in one line at the top (report.md, report.html, ``results.json["headline"]``),
   every number from the results, honest when CIs include 0 or the differences change sign,
   for any arms (variants too);
2. code spans in HTML tables are ``<code>``, not literal backticks;
3. Figure 2 says which arms' L_l come from monitoring batches and which from training batches;
4. the paper's numbers (columns, values, figure marks and trends) only for All-CNN-C on
   CIFAR-10, and no "preset unknown";
5. ``dainv reproduce`` ends with the headline and the paths of report.md and report.html;
6. the per-epoch console line shows every tapped layer.

Reports are built from synthetic run folders (``test_report.make_run``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from dainv import report
from dainv.cli import main
from dainv.report import figures, finding_layers, headline
from dainv.report.load import load_reproduction
from dainv.train import epoch_line
from test_report import make_repro, make_run, unrendered

REPO = Path(__file__).resolve().parents[1]


def _set_model(run: Path, name: str) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["name"] = name
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.fixture(scope="module")
def paper_like(tmp_path_factory) -> Path:
    """All-CNN-C on CIFAR-10 (the paper's setting): baseline, DAI and control, one seed."""
    root = make_repro(tmp_path_factory.mktemp("reader") / "repro", ["baseline", "dai", "control"], [0])
    for arm, t in (("baseline", [30.0, 10.0, 10.0]), ("dai", [55.0, 11.0, 11.0]), ("control", [60.0, 12.0, 12.0])):
        make_run(root, arm, 0, epoch_times=t)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(figures, "render", unrendered)  # the figures are drawn; their pixels are not read here
        report.build_report(root)
    return root


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> Path:
    """The same runs of another network (WRN-28-10 on CIFAR-10): not the paper's setting."""
    root = make_repro(tmp_path_factory.mktemp("reader") / "wrn", ["baseline", "dai"], [0], preset="wrn-cifar10")
    for arm in ("baseline", "dai"):
        _set_model(make_run(root, arm, 0, epoch_times=[10.0, 10.0]), "wrn-28-10")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(figures, "render", unrendered)
        report.build_report(root)
    return root


def _ci(diff: float, half: float = 0.01) -> dict:
    lo, hi = diff - half, diff + half
    return {"diff": diff, "lo": lo, "hi": hi, "includes_zero": lo <= 0 <= hi}


class _Arms:
    def __init__(self, arms):
        self.arms = arms


# ---------------------------------------------------------------------------------------------
# 1. The result in one line, at the top
# ---------------------------------------------------------------------------------------------


def test_the_report_starts_with_its_result_in_one_line(paper_like):
    res = json.loads((paper_like / "results.json").read_text())
    md = (paper_like / "report.md").read_text().split("\n\n")
    assert md[0].startswith("# ") and md[1] == f"**Result:** {res['headline']}"  # first, before the table
    html = (paper_like / "report.html").read_text()
    assert html.index("<strong>Result:</strong>") < html.index("<table>")
    cis = res["differences"]["vs_baseline"]["dai − baseline"]
    layers = finding_layers([la for la in cis if cis[la]])
    d = [cis[la]["diff"] for la in layers]
    assert res["headline"].startswith(
        f"DAI is more invariant than the baseline at {layers[0]}–{layers[-1]}, by {min(d):+.3f} to {max(d):+.3f} "
        f"(95 % CIs within [{min(cis[la]['lo'] for la in layers):+.3f}, {max(cis[la]['hi'] for la in layers):+.3f}], "
        "none includes 0)")  # fmt: skip
    acc = {a: 100 * res["accuracy"][a]["single_view"]["mean"] for a in res["arms"]}
    assert res["headline"].endswith(f"test accuracy baseline {acc['baseline']:.1f} %, DAI {acc['dai']:.1f} %, "
                                    f"control {acc['control']:.1f} %.")  # fmt: skip


def test_the_headline_is_honest_about_intervals_and_signs():
    layers = [f"conv{i}" for i in range(1, 10)]  # the headline speaks of conv5–conv9
    cases = {
        "dai − baseline": ([0.05] * 9, "DAI is more invariant than the baseline at conv5–conv9, by +0.050 to +0.050"),
        "control − baseline": ([-0.05] * 9, "the control is less invariant than the baseline at conv5–conv9"),
        "dai-sc − baseline": ([0.0] * 9, "dai-sc vs the baseline at conv5–conv9: no evidence of a difference "
                                         "(+0.000 to +0.000; every 95 % CI includes 0)"),
        "dai-nearest − baseline-nearest": ([0.0] * 4 + [-0.05, -0.05, 0.0, 0.05, 0.05],
                                           "dai-nearest vs baseline-nearest at conv5–conv9: -0.050 to +0.050, in both "
                                           "directions (95 % CI above 0 at conv8, conv9; below 0 at conv5, conv6; "
                                           "includes 0 at conv7)"),
    }  # fmt: skip
    cis = {name: dict(zip(layers, (_ci(d) for d in diffs))) for name, (diffs, _) in cases.items()}
    arms = _Arms(["baseline", "dai", "control", "dai-sc", "baseline-nearest", "dai-nearest"])
    acc = {"baseline": {"single_view": {"mean": 0.5}}, "dai": {"single_view": {"mean": 0.45}}}
    text = headline(arms, acc, cis, {})
    for name, (_, said) in cases.items():
        assert said in text, name
    assert text.endswith("test accuracy baseline 50.0 %, DAI 45.0 %.")
    assert "No arm" in headline(_Arms(["baseline"]), {}, {}, {})


def test_the_committed_quick_results_give_the_readmes_reading():
    """docs/quick/results.json (the README's run): DAI above the baseline at conv5–conv9 with
    every CI excluding 0; the control in both directions — as the README says."""
    res = json.loads((REPO / "docs" / "quick" / "results.json").read_text())
    text = headline(_Arms(res["arms"]), res["accuracy"], res["differences"]["vs_baseline"], res["invariance"])
    assert text.startswith("DAI is more invariant than the baseline at conv5–conv9, by +0.056 to +0.102")
    assert "the control vs the baseline at conv5–conv9: -0.031 to +0.018, in both directions" in text
    assert text.endswith("test accuracy baseline 46.8 %, DAI 40.4 %, control 41.9 %.")


# ---------------------------------------------------------------------------------------------
# 2. Code spans in HTML tables
# ---------------------------------------------------------------------------------------------


def test_html_tables_render_code_spans_not_backticks(paper_like):
    html = (paper_like / "report.html").read_text()
    assert "`" not in html
    assert "<td><code>baseline-s0</code></td>" in html and "<code>abc123</code>" in html
    assert "| `baseline-s0` |" in (paper_like / "report.md").read_text()  # Markdown keeps its backticks


# ---------------------------------------------------------------------------------------------
# 3. Figure 2: monitoring batches and training batches are told apart
# ---------------------------------------------------------------------------------------------


def test_figure_2_says_which_arms_are_measured_on_which_batches(paper_like):
    repro = load_reproduction(paper_like)
    res = json.loads((paper_like / "results.json").read_text())
    fig = figures.fig_dai_loss(repro, res)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert any(t.startswith("baseline") and t.endswith("L_l on monitoring batches") for t in titles), titles
    assert any(t.startswith("dai") and t.endswith("L_l on training batches") for t in titles), titles
    assert "different inputs" in fig._suptitle.get_text()
    md = (paper_like / "report.md").read_text()
    caption = re.search(r"!\[Figure 2[^\n]*\n\n\*(.*)\*", md).group(1)
    assert "baseline: on fixed monitoring batches" in caption and "dai, control: on its own training batches" in caption
    assert "share the y axis but not the inputs" in caption


# ---------------------------------------------------------------------------------------------
# 4. The paper's numbers only for All-CNN-C on CIFAR-10
# ---------------------------------------------------------------------------------------------


def test_no_paper_numbers_for_another_model(other_model, paper_like):
    md = (other_model / "report.md").read_text()
    res = json.loads((other_model / "results.json").read_text())
    assert res["paper_setting"] is False and res["paper_medians"] is None and res["paper_accuracy"] is None
    for published in ("paper dai", "paper (CCN)", "0.87", "91.5 %", "In the paper (Figure 2)", "the CCN paper",
                      "Diamonds", "GTX 1080 Ti", "longer presets", "| paper |"):  # fmt: skip
        assert published not in md, published
    assert "they are of All-CNN-C trained on CIFAR-10, and these runs are not (they are wrn-28-10 on cifar10)" in md
    # the same runs of the paper's network keep them
    ref = (paper_like / "report.md").read_text()
    assert "paper dai" in ref and "91.5 %" in ref and "In the paper (Figure 2)" in ref


def test_run_folders_of_another_model_are_not_preset_unknown(other_model, tmp_path, monkeypatch):
    runs = [other_model / "baseline-s0", other_model / "dai-s0"]
    monkeypatch.setattr(figures, "render", unrendered)
    out = report.compare_runs(runs, tmp_path / "cmp").parent
    md = (out / "report.md").read_text()
    assert "unknown" not in md and "unknown" not in (out / "report.html").read_text()
    assert md.startswith("# Data augmentation invariance — comparison of runs (wrn-28-10 on cifar10)")
    assert "paper dai" not in md and "91.5 %" not in md


# ---------------------------------------------------------------------------------------------
# 5. dainv reproduce ends with the headline and both report paths
# ---------------------------------------------------------------------------------------------


def test_reproduce_prints_the_headline_and_both_reports(paper_like, capsys, monkeypatch):
    monkeypatch.setattr("dainv.reproduce.reproduce", lambda preset, **kw: paper_like / "report.md")
    assert main(["reproduce", "--preset", "quick"]) == 0
    out = capsys.readouterr().out.splitlines()
    res = json.loads((paper_like / "results.json").read_text())
    assert out[-3:] == [res["headline"], f"report: {paper_like / 'report.md'}", f"report: {paper_like / 'report.html'}"]


# ---------------------------------------------------------------------------------------------
# 6. The epoch line shows every layer
# ---------------------------------------------------------------------------------------------


def test_the_epoch_line_shows_every_tapped_layer():
    rec = {"epoch": 1, "train_ce": 2.0, "train_acc": 0.1, "test_acc": None, "samples_per_s": 100.0,
           "dai": {f"conv{i}": i / 10 for i in range(1, 10)}}  # fmt: skip
    line = epoch_line(rec, 5)
    assert "L_l conv1..conv9 0.100 0.200 0.300 0.400 0.500 0.600 0.700 0.800 0.900 100 samples/s" in line
    assert "test_acc -" in line
    assert "L_l block 0.250 " in epoch_line({**rec, "dai": {"block": 0.25}}, 5)
    assert "L_l" not in epoch_line({**rec, "dai": {}}, 5)  # a baseline epoch without monitoring
