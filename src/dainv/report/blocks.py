"""The report's document model: blocks of inline text, rendered to Markdown and HTML alike.

Inline text is a sequence of plain strings and :class:`Span` (code, strong, em): no markup
inside strings, so each renderer formats and escapes it its own way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Span", "Inline", "code", "strong", "em", "inline", "plain", "md", "table",
           "Heading", "Para", "Quote", "Bullets", "Table", "FigureBlock", "Block"]


@dataclass(frozen=True)
class Span:
    style: str  # "code" | "strong" | "em"
    text: str


Inline = tuple[str | Span, ...]


def code(s: Any) -> Span:
    return Span("code", str(s))


def strong(s: Any) -> Span:
    return Span("strong", str(s))


def em(s: Any) -> Span:
    return Span("em", str(s))


def inline(*parts: Any) -> Inline:
    """Flatten strings, spans and nested inline tuples/lists into one :data:`Inline`."""
    out: list[str | Span] = []
    for p in parts:
        if isinstance(p, tuple | list):
            out.extend(inline(*p))
        elif isinstance(p, Span):
            out.append(p)
        elif p is not None:
            out.append(str(p))
    return tuple(out)


def plain(text: Inline | str) -> str:
    """The text without styling."""
    return text if isinstance(text, str) else "".join(p.text if isinstance(p, Span) else p for p in text)


@dataclass
class Heading:
    level: int
    text: Inline
    kind: str = "heading"


@dataclass
class Para:
    text: Inline
    kind: str = "para"


@dataclass
class Quote:
    text: Inline
    kind: str = "quote"


@dataclass
class Bullets:
    items: list[Inline]
    kind: str = "bullets"


@dataclass
class Table:
    headers: list[Inline]
    rows: list[list[Inline]]
    caption: Inline = ()
    kind: str = "table"


@dataclass
class FigureBlock:
    title: str
    caption: Inline
    png: Any  # Path of the PNG written next to the report
    extra: list[str] = field(default_factory=list)
    kind: str = "figure"


Block = Heading | Para | Quote | Bullets | Table | FigureBlock


def _cell(c: Any) -> Inline:
    """A cell: a string is read with :func:`md` (its ```code``` becomes a code span, rendered as
    ``<code>`` in HTML, not as literal backticks); spans and inline tuples as they are."""
    return md(c) if isinstance(c, str) else inline(c)


def table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], caption: Any = ()) -> Table:
    """A :class:`Table` from cells given as strings (with ``**strong**`` and ```code```),
    spans or inline tuples."""
    return Table([_cell(h) for h in headers], [[_cell(c) for c in row] for row in rows], _cell(caption))


def md(s: str) -> Inline:
    """Inline text from a string using only the two markers the report's phrases use:
    ``**strong**`` and ```code``` (split on the markers; nothing else is interpreted)."""
    out: list[str | Span] = []
    for i, chunk in enumerate(str(s).split("**")):
        strong_ = i % 2 == 1
        for j, piece in enumerate(chunk.split("`")):
            if not piece:
                continue
            if j % 2 == 1:
                out.append(Span("code", piece))
            else:
                out.append(Span("strong", piece) if strong_ else piece)
    return tuple(out)
