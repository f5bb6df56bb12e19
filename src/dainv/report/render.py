"""Markdown and HTML from one document model (:mod:`dainv.report.blocks`).

Markdown is written by hand (a few lines per block); HTML by a small Jinja2 template with
autoescaping, figures embedded as base64 PNG so that ``report.html`` is one self-contained file.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import jinja2

from dainv.report.blocks import Block, Inline, Span

__all__ = ["to_markdown", "to_html", "inline_md"]

_MD_MARK = {"code": "`", "strong": "**", "em": "*"}


def inline_md(text: Inline | str) -> str:
    """Inline text as Markdown."""
    if isinstance(text, str):
        return text
    return "".join(f"{_MD_MARK[p.style]}{p.text}{_MD_MARK[p.style]}" if isinstance(p, Span) else p for p in text)


def _cell(text: Inline) -> str:
    return inline_md(text).replace("|", "\\|").replace("\n", " ")


def _md_block(b: Block, base: Path) -> str:
    if b.kind == "heading":
        return "#" * b.level + " " + inline_md(b.text)
    if b.kind == "para":
        return inline_md(b.text)
    if b.kind == "quote":
        return "\n".join("> " + line for line in inline_md(b.text).splitlines())
    if b.kind == "bullets":
        return "\n".join(f"- {inline_md(i)}" for i in b.items)
    if b.kind == "table":
        lines = ["| " + " | ".join(_cell(h) for h in b.headers) + " |", "|" + "|".join("---" for _ in b.headers) + "|"]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in b.rows]
        return "\n".join(lines + (["", f"*{inline_md(b.caption)}*"] if b.caption else []))
    png = Path(b.png)
    rel = png.relative_to(base) if png.is_relative_to(base) else png
    return f"![{b.title}]({rel.as_posix()})\n\n*{inline_md(b.caption)}*"


def to_markdown(blocks: Sequence[Block], base: Path) -> str:
    """The document as Markdown; figure links relative to ``base`` (the report's folder)."""
    return "\n\n".join(_md_block(b, Path(base)) for b in blocks) + "\n"


_TEMPLATE = """\
{%- macro text(parts) -%}
{%- for style, t in parts | spans -%}
{%- if style == "code" %}<code>{{ t }}</code>{% elif style == "strong" %}<strong>{{ t }}</strong>
{%- elif style == "em" %}<em>{{ t }}</em>{% else %}{{ t }}{% endif -%}
{%- endfor -%}
{%- endmacro -%}
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
{{ css | safe }}
</style></head><body>
{% for b in blocks -%}
{% if b.kind == "heading" %}<h{{ b.level }}>{{ text(b.text) }}</h{{ b.level }}>
{% elif b.kind == "para" %}<p>{{ text(b.text) }}</p>
{% elif b.kind == "quote" %}<blockquote>{{ text(b.text) }}</blockquote>
{% elif b.kind == "bullets" %}<ul>{% for i in b.items %}<li>{{ text(i) }}</li>{% endfor %}</ul>
{% elif b.kind == "table" %}<table>
{% if b.caption %}<caption>{{ text(b.caption) }}</caption>{% endif %}
<thead><tr>{% for h in b.headers %}<th>{{ text(h) }}</th>{% endfor %}</tr></thead><tbody>
{% for row in b.rows %}<tr>{% for c in row %}<td{% if not loop.first and c | numeric %} class="num"{% endif %}>{{ text(c) }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{% elif b.kind == "figure" %}<figure><img alt="{{ b.title }}" src="data:image/png;base64,{{ b.png | b64 }}"><figcaption>{{ text(b.caption) }}</figcaption></figure>
{% endif %}
{%- endfor %}
</body></html>
"""

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


def _spans(parts: Inline) -> list[tuple[str, str]]:
    return [(p.style, p.text) if isinstance(p, Span) else ("", p) for p in parts]


def _numeric(parts: Inline) -> bool:
    first = next((p.text if isinstance(p, Span) else p for p in parts), "").lstrip()
    return first[:1] in tuple("0123456789+-−—≈")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["spans"] = _spans
    env.filters["numeric"] = _numeric
    env.filters["b64"] = lambda p: base64.b64encode(Path(p).read_bytes()).decode("ascii")
    return env


def to_html(blocks: Sequence[Block], title: str) -> str:
    """The document as one self-contained HTML page."""
    return _env().from_string(_TEMPLATE).render(blocks=blocks, title=title, css=_CSS)
