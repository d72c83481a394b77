"""The one HTML report system: page, verdict banner, tables, cells and number formatting.

Gates (:mod:`mlops.quality.gates`), data validation (:mod:`mlops.data.validate`) and monitoring
(:mod:`mlops.quality.monitoring`) all render through here, so every report looks the same and is
self-contained: inline CSS, no scripts, no external URLs. Body markup passed in is trusted; callers
escape user values with :func:`html.escape` (headers and titles are escaped here).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

Verdict = Literal["PASS", "FAIL", "SKIPPED", "FORCED"]

CSS = """
.mlops-report { font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, Helvetica, Arial,
  sans-serif; color: #1f2933; line-height: 1.45; }
body.mlops-report { max-width: 1100px; margin: 2rem auto; padding: 0 1.25rem; background: #fafbfc; }
.mlops-report h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
.mlops-report h2 { font-size: 1.15rem; margin: 1.75rem 0 .5rem; }
.mlops-report .meta { color: #616e7c; font-size: .85rem; margin-bottom: 1rem; }
.mlops-banner { border-radius: 6px; padding: .9rem 1.1rem; margin: 1rem 0 1.25rem; font-size: 1rem;
  border-left: 8px solid; font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto,
  Helvetica, Arial, sans-serif; }
.mlops-banner .verdict { font-weight: 700; letter-spacing: .05em; margin-right: .6rem; }
.mlops-banner.pass { background: #e3f9e5; border-color: #31a544; color: #0e5a1c; }
.mlops-banner.fail { background: #ffe3e3; border-color: #d64545; color: #780a0a; }
.mlops-banner.skipped { background: #eef2f7; border-color: #7b8794; color: #323f4b; }
.mlops-banner.forced { background: #fff8db; border-color: #de911d; color: #733e0a; }
.mlops-report table { border-collapse: collapse; margin: .5rem 0 1rem; background: #fff;
  font-variant-numeric: tabular-nums; }
.mlops-report th, .mlops-report td { border: 1px solid #d9e2ec; padding: .35rem .7rem; text-align: left;
  vertical-align: top; }
.mlops-report th { background: #f0f4f8; }
.mlops-report td.num { text-align: right; }
.mlops-report tr.small td { color: #7b8794; font-style: italic; }
.mlops-report tr.bad td { background: #fdecea; }
.mlops-report .tag { display: inline-block; padding: 0 .45rem; border-radius: 4px; font-size: .8rem;
  font-weight: 600; }
.mlops-report .tag.pass { background: #e3f9e5; color: #0e5a1c; }
.mlops-report .tag.fail { background: #ffe3e3; color: #780a0a; }
.mlops-report .tag.note { background: #eef2f7; color: #323f4b; }
.mlops-report code { font-size: .85rem; }
.mlops-report dl { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }
"""


def verdict_banner(verdict: Verdict, summary: str) -> str:
    """The coloured PASS/FAIL line at the top of every report, so the outcome is seen first."""
    return (
        f'<div class="mlops-banner {verdict.lower()}" data-verdict="{verdict}">'
        f'<span class="verdict">{verdict}</span>{html.escape(summary)}</div>'
    )


def render_page(title: str, body_html: str, *, verdict: Verdict | None = None, summary: str = "") -> str:
    """A self-contained HTML page; with ``verdict`` a banner carrying ``summary`` is shown under the title."""
    banner = verdict_banner(verdict, summary) if verdict else ""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f'<body class="mlops-report">\n<h1>{html.escape(title)}</h1>\n'
        f'<div class="meta">generated {generated}</div>\n{banner}\n{body_html}\n</body>\n</html>\n'
    )


def write_page(path: Path, page: str) -> Path:
    """Write a rendered page atomically (a reader never sees half a report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def write_html(path: Path, title: str, body_html: str, *, verdict: Verdict | None = None, summary: str = "") -> Path:
    """Render (:func:`render_page`) and write a report page; returns its path."""
    return write_page(path, render_page(title, body_html, verdict=verdict, summary=summary))


def write_evidently_html(snapshot: Any, path: Path, verdict: Verdict, summary: str) -> Path:
    """Save an Evidently snapshot with our verdict banner injected at the top of the page.

    Evidently's ``save_html`` only accepts a ``str`` path (a ``Path`` is silently ignored), so the
    page is rendered to a string and written here.
    """
    page: str = snapshot.get_html_str(as_iframe=False)
    banner = f"<style>{CSS}</style>{verdict_banner(verdict, summary)}"
    style = "max-width:1100px;margin:1rem auto 0;padding:0 1rem"
    wrapped = f'<div class="mlops-report" style="{style}">{banner}</div>'
    page, n = re.subn(r"<body>", lambda _m: f"<body>\n{wrapped}", page, count=1)
    if n == 0:  # template changed: still put the verdict in the file
        page = wrapped + page
    return write_page(path, page)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], row_classes: Sequence[str] = ()) -> str:
    """An HTML table; cells are trusted markup (callers escape), headers are escaped here."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if i < len(row_classes) and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def num_cell(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals; None and NaN show as ``n/a``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def tag(ok: bool, *, passed: str = "PASS", failed: str = "FAIL") -> str:
    """A small green/red label."""
    return f'<span class="tag pass">{passed}</span>' if ok else f'<span class="tag fail">{failed}</span>'


def note_tag(text: str) -> str:
    """A small grey label (escaped)."""
    return f'<span class="tag note">{html.escape(text)}</span>'


def fmt_vs(value: float, bound: float, digits: int = 3, *, trim_bound: bool = False) -> tuple[str, str]:
    """Format a value and its bound with enough decimals that they do not print the same when they differ.

    ``trim_bound`` drops the bound's trailing zeros (``0.7`` rather than ``0.700``).
    """
    for d in range(digits, 8):
        a, b = f"{value:.{d}f}", f"{bound:.{d}f}"
        if a != b or value == bound:
            return a, (b.rstrip("0").rstrip(".") if trim_bound and "." in b else b)
    return f"{value:.8f}", f"{bound:.8f}"
