"""The report as text from ``templates/`` (``prose.md.j2``: the sentences also in ``results.json``), which iterate
over the data (no arm is named here); ``report.html`` is that Markdown converted (figures as base64 PNG)."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

import dainv.report.paper as paper
import dainv.report.stats as stats
from dainv.report.figures import FigureResult, seed_text
from dainv.report.load import Reproduction, finite, get, order_layers, settings_check, under_scheme


def finding_layers(layers: Sequence[str]) -> list[str]:
    """The layers the findings compare: the deeper half of the network's (``input`` aside)."""
    body = [la for la in layers if la != "input"]
    return body[len(body) - math.ceil(len(body) / 2):]


_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                          trim_blocks=True, lstrip_blocks=True)
_ENV.globals.update(P=paper, get=get, finite=finite, finding_layers=finding_layers,
                    seed_text=seed_text, N_BOOT=stats.N_BOOT, REF=stats.REFERENCE,
                    layers_of=lambda d, arms: order_layers(la for a in arms for la in d[a]["layers"]))
_ENV.tests["finite"] = finite
_ENV.filters["cell"] = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # a table cell's own text


def _prose(name: str, **kw: Any) -> list[str]:
    """The blocks (split on blank lines) of macro ``name`` of ``prose.md.j2``, each on one line."""
    text = getattr(_ENV.get_template("prose.md.j2").module, name)(**kw)
    return [" ".join(b.split()) for b in re.split(r"\n\s*\n", str(text)) if b.strip()]


def headline(repro: Any, acc: Mapping[str, Any], cis: Mapping[str, Any], inv: Mapping[str, Any]) -> str:
    """The report's one-line result (also printed by ``dainv reproduce``)."""
    text = " ".join(_prose("headline", arms=repro.arms, acc=acc, cis=cis, inv=inv))
    return text[:1].upper() + text[1:]


def _loss_trends(repro: Reproduction) -> list[dict[str, Any]]:
    out = []
    for arm in repro.arms:
        curves = stats.dai_loss_curves(repro, arm)
        eps = sorted(set.intersection(*(set(c["epoch"]) for c in curves.values()))) if curves else []
        if len(eps) >= 2:
            first, last = (float(np.mean([c["mean"][c["epoch"].index(e)] for c in curves.values()])) for e in (eps[0], eps[-1]))
            out.append({"arm": arm, "first": first, "last": last, "epochs": (eps[0], eps[-1])})
    return out


def findings(repro: Reproduction, acc: Mapping[str, Any] | None = None, inv: Mapping[str, Any] | None = None,
             cis: Mapping[str, Any] | None = None) -> list[str]:
    """The automatic "what this shows" sentences (Markdown), every number from the files."""
    return _prose("findings", repro=repro, acc=stats.accuracy_stats(repro) if acc is None else acc,
                  inv=stats.invariance_stats(repro) if inv is None else inv,
                  cis=stats.comparisons(repro) if cis is None else cis, refs=stats.references(repro),
                  trends=_loss_trends(repro), spec={  # each arm's M and α: what tells a control from its DAI arm
                      a: {"views": get(rs[0].config, "train", "views"), "alpha": get(rs[0].config, "train", "alpha")}
                      for a in repro.arms if (rs := repro.results(a))})


def run_gaps(repro: Reproduction, arm: str, seed: Any) -> list[str]:
    run = repro.runs[arm][seed]
    if run is None:
        return [f"run folder `{repro.folders.get(arm, {}).get(seed, '?')}` does not exist (not started)"]
    gaps: list[str] = []
    if not run.meta:
        gaps.append("no `meta.json`")
    elif not run.finished:
        gaps.append(f"not finished (`meta.json` status '{run.status}': still running or interrupted)")
    if not run.metrics:
        gaps.append("no epoch logged in `metrics.jsonl`")
    elif run.epochs_planned is not None and run.epochs_done < run.epochs_planned:
        gaps.append(f"{run.epochs_done} of {run.epochs_planned} epochs logged")
    if run.summary is None:
        gaps.append("not evaluated (no `eval/summary.json`: no final accuracy or invariance numbers)")
    elif run.scores is None:
        gaps.append("no `eval/scores.npz` (invariance from the summary's quartiles only)")
    if run.stale_reason:
        gaps.append("STALE EVALUATION: " + run.stale_reason)
    kept, lost = get(run.config, "train", "keep_epochs"), set(run.meta.get("kept_epochs_lost") or [])
    for e in sorted(kept) if isinstance(kept, list) else ():  # kept checkpoints without an evaluation
        if isinstance(e, int) and e <= run.epochs_done and e not in run.epoch_evals:
            why = ("its checkpoint was lost when the run was stopped (`meta.json`: kept_epochs_lost)" if e in lost
                   else "no `eval-epoch-NNNN/`")  # fmt: skip
            gaps.append(f"the kept checkpoint of epoch {e} (`train.keep_epochs`) is not evaluated: {why}; "
                        "the gap vs epochs lacks it")  # fmt: skip
    return gaps + run.problems


def missing_sentences(repro: Reproduction) -> dict[str, str]:
    """One sentence (Markdown) per arm that has something missing or unfinished."""
    out: dict[str, str] = {}
    for arm in repro.arms:
        parts = [f"seed {seed}: " + "; ".join(gaps) + "." for seed in repro.runs[arm] if (gaps := run_gaps(repro, arm, seed))]
        if parts:
            out[arm] = f"**{arm}** — " + " ".join(parts)
    return out


def jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    x = x.item() if isinstance(x, np.generic) else x
    return None if isinstance(x, float) and not math.isfinite(x) else str(x) if isinstance(x, Path) else x


def _portable(ck: Any) -> dict[str, Any] | None:
    """A checkpoint record with its path as the run folder names it: no machine's paths."""
    if not isinstance(ck, Mapping):
        return None
    out = dict(ck)
    if isinstance(out.get("path"), str) and (p := Path(out["path"])).is_absolute():
        out["path"] = f"{p.parent.name}/{p.name}" if p.parent.name == "checkpoints" else p.name
    return out


def _run_rows(repro: Reproduction) -> dict[str, dict[Any, dict[str, Any]]]:
    out: dict[str, dict[Any, dict[str, Any]]] = {}
    for arm in repro.arms:
        out[arm] = {}
        for seed, r in repro.runs[arm].items():
            e = {"folder": repro.folders[arm][seed], "exists": r is not None, "missing": run_gaps(repro, arm, seed)}
            if r is not None:
                e.update(status=r.status, epochs_done=r.epochs_done, epochs_planned=r.epochs_planned,
                         evaluated_checkpoint=_portable(r.final_eval.checkpoint if r.final_eval else None),
                         stale_evaluation=r.stale_reason,
                         **{k: r.meta.get(k) for k in ("wall_time_s", "train_time_s", "started", "finished",
                                                       "device", "torch", "git_commit", "cpu")})
            out[arm][seed] = e
    return out


def _distinct(values: Any) -> list[str]:
    return list(dict.fromkeys(str(v) for v in values if v))


def collect_results(repro: Reproduction) -> dict[str, Any]:
    """Every number of the report's tables, as written to ``results.json``."""
    acc, inv, cis = stats.accuracy_stats(repro), stats.invariance_stats(repro), stats.comparisons(repro)
    runs = repro.all_results()
    skip = ("data.root=", "device=")  # machine-specific --set settings are left out
    other = {}
    for scheme in sorted({s for r in runs for s in r.scheme_evals}):  # eval+SCHEME/
        view = under_scheme(repro, scheme)
        other[scheme] = {"invariance": stats.invariance_stats(view), "vs_baseline": stats.comparisons(view),
                         "gap_vs_epochs": stats.gap_vs_epochs(view)}
    protocol = _prose("protocol", protocols=_distinct(get(r.config, "method", "protocol") for r in runs),
                      precisions=_distinct(get(r.config, "train", "precision") for r in runs),
                      devices=_distinct(r.meta.get("device") for r in runs),
                      cpus=_distinct(r.meta.get("cpu") for r in runs) or _distinct([repro.machine.get("cpu")]))
    return {
        "headline": headline(repro, acc, cis, inv),
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "reproduction": repro.path.name, "preset": repro.preset, "preset_note": repro.preset_note,
        "overrides": [str(o) for o in repro.manifest.get("overrides") or [] if not str(o).startswith(skip)],
        "protocol": protocol[0], "arms": repro.arms, "seeds": repro.seeds, "machine": repro.machine,
        "runs": _run_rows(repro), "accuracy": acc,
        "paper_setting": repro.paper,  # the published numbers only for All-CNN-C on CIFAR-10
        "paper_accuracy": {"ccn": paper.PAPER_ACCURACY, "thesis": paper.PAPER_ACCURACY_THESIS,
                           "thesis_other": paper.THESIS_OTHER_NETWORKS} if repro.paper else None,
        "invariance": inv,
        "differences": {"ci_level": stats.CI_LEVEL, "n_boot": stats.N_BOOT, "vs_baseline": cis,
                        "not_compared": stats.unpaired(repro)},
        "settings": settings_check(repro), "gap_vs_epochs": stats.gap_vs_epochs(repro), "other_schemes": other,
        "paper_medians": {a: dict(zip(paper.PAPER_MEDIAN_LAYERS, v)) for a, v in paper.PAPER_MEDIANS.items()}
        if repro.paper else None,
        "per_transform": stats.per_transform_stats(repro), "training_time": stats.overhead_stats(repro),
        "missing": missing_sentences(repro), "findings": findings(repro, acc, inv, cis),
    }


#: ``config.yaml`` keys of the configuration table, with their column names.
_CONFIG_KEYS = {"method.protocol": "protocol", "train.epochs": "epochs", "train.views": "views M",
                "train.batch_size": "batch size", "train.alpha": "α", "train.precision": "precision",
                "model.name": "model", "model.width": "width"}


def _config_table(repro: Reproduction, more: Sequence[str]) -> dict[str, Any]:
    keys = [k for k in {**_CONFIG_KEYS, **dict.fromkeys(more)}
            if any(get(r.config, *k.split(".")) is not None for r in repro.all_results())]
    rows = {a: [", ".join(_distinct(str(v) for r in repro.results(a) if (v := get(r.config, *k.split("."))) is not None))
                or "—" for k in keys] for a in repro.arms}
    return {"header": [_CONFIG_KEYS.get(k, k) for k in keys], "rows": rows}


def to_markdown(repro: Reproduction, res: Mapping[str, Any], figs: Sequence[FigureResult]) -> str:
    """The template rendered, each block's wrapped lines joined into one."""
    text = _ENV.get_template("report.md.j2").render(
        repro=repro, res=res, figs={f.name: f for f in figs}, config=_config_table(repro, list(res["settings"]["differ"])),
        devices=", ".join(sorted(_distinct(r.meta.get("device") for r in repro.all_results()))))
    blocks = []
    for block in re.split(r"\n\s*\n", text):
        block = "\n".join(line.strip() for line in block.strip().splitlines())
        lines = re.sub(r"\n(?!\||- |> |#|!\[)", " ", block).splitlines()  # a line that starts no block continues
        if lines and lines[0].startswith("|"):  # a table: the line under its header
            lines.insert(1, "|" + "---|" * (len(re.findall(r"(?<!\\)\|", lines[0])) - 1))
        blocks += ["\n".join(lines)] if lines else []
    return "\n\n".join(blocks) + "\n"


_CSS = """\
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1150px;
       margin: 2em auto; padding: 0 1.2em; color: #222; line-height: 1.45; }
h1 { font-size: 1.55em; border-bottom: 2px solid #4477AA; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .65em; }
th { background: #f0f3f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
caption { caption-side: bottom; text-align: left; font-size: .88em; color: #555; padding-top: .3em; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; font-size: .92em; }
blockquote { border-left: 4px solid #ccbb44; margin: 1em 0; padding: .3em 1em; background: #fbfaf0; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #e3e3e3; }
figcaption { font-size: .9em; color: #444; }"""


def _inline(md: str) -> str:
    """Markdown inline text as HTML: code spans, ``**strong**``, a whole ``*emphasis*``."""
    em = len(md) > 1 and md[0] == md[-1] == "*" and md[1] != "*"
    parts = (md[1:-1] if em else md).split("`")
    out = "".join(f"<code>{html.escape(p)}</code>" if i % 2 else
                  re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(p, quote=False).replace("\\|", "|"))
                  for i, p in enumerate(parts))  # fmt: skip
    return f"<em>{out}</em>" if em else out


def _cells(line: str, tag: str) -> str:
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
    num = ['' if i == 0 or c.lstrip("`*")[:1] not in tuple("0123456789+-−—≈") else ' class="num"'
           for i, c in enumerate(cells)]
    return "<tr>" + "".join(f"<{tag}{n}>{_inline(c)}</{tag}>" for c, n in zip(cells, num)) + "</tr>"


def to_html(md: str, title: str, base: Path) -> str:
    """``report.md`` as one self-contained HTML page, ``base/figures/*.png`` embedded."""
    blocks, out, i = md.strip().split("\n\n"), [], 0
    while i < len(blocks):
        b, nxt = blocks[i], blocks[i + 1] if i + 1 < len(blocks) else ""
        caption = nxt if nxt.startswith("*") and nxt.endswith("*") and not nxt.startswith("**") else None
        i += 1 + (caption is not None and b.startswith(("|", "![")))
        if m := re.fullmatch(r"(#+) (.*)", b):
            out.append(f"<h{len(m[1])}>{_inline(m[2])}</h{len(m[1])}>")
        elif m := re.fullmatch(r"!\[(.*)\]\((.*)\)", b):
            png = base64.b64encode((Path(base) / m[2]).read_bytes()).decode("ascii")
            cap = f"<figcaption>{_inline(caption[1:-1])}</figcaption>" if caption else ""
            out.append(f'<figure><img alt="{html.escape(m[1])}" src="data:image/png;base64,{png}">{cap}</figure>')
        elif b.startswith("|"):
            rows = [line for line in b.splitlines() if not line.startswith("|-")]
            cap = f"<caption>{_inline(caption[1:-1])}</caption>\n" if caption else ""
            out.append(f"<table>\n{cap}<thead>{_cells(rows[0], 'th')}</thead><tbody>\n"
                       + "\n".join(_cells(r, "td") for r in rows[1:]) + "\n</tbody></table>")
        elif b.startswith("> "):
            out.append(f"<blockquote>{_inline(b[2:])}</blockquote>")
        elif b.startswith("- "):
            out.append("<ul>" + "".join(f"<li>{_inline(li[2:])}</li>" for li in b.splitlines()) + "</ul>")
        else:
            out.append(f"<p>{_inline(b)}</p>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n<meta name="viewport" '
            f'content="width=device-width, initial-scale=1">\n<title>{html.escape(title)}</title>\n'
            f"<style>\n{_CSS}\n</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")
