"""Self-contained HTML reports with inline SVG plots (no plotting dependency, nothing fetched when opened)."""

from __future__ import annotations

import html
import math

_W, _H = 640, 260
_PAD_L, _PAD_B, _PAD_T, _PAD_R = 60, 40, 24, 16
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _frame(title: str, xlabel: str, ylabel: str, body: list[str], ylo: float, yhi: float, height: int = _H) -> str:
    y = _scale(ylo, yhi, height - _PAD_B, _PAD_T)
    ticks = []
    for i in range(5):
        v = ylo + (yhi - ylo) * i / 4
        v = 0.0 if abs(v) < 1e-9 * max(abs(ylo), abs(yhi), 1e-30) else v  # 3.55e-15 is zero
        ticks.append(f'<line x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
                     f'<text x="{_PAD_L - 6}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">{v:.3g}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" font-family="sans-serif">'
            f'<text x="{_W / 2}" y="14" font-size="12" text-anchor="middle" font-weight="bold">{_esc(title)}</text>'
            + "".join(ticks) + "".join(body)
            + f'<line x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{height - _PAD_B}" y2="{height - _PAD_B}" stroke="#333"/>'
            f'<line x1="{_PAD_L}" x2="{_PAD_L}" y1="{_PAD_T}" y2="{height - _PAD_B}" stroke="#333"/>'
            f'<text x="{_W / 2}" y="{height - 4}" font-size="11" text-anchor="middle">{_esc(xlabel)}</text>'
            f'<text x="12" y="{height / 2}" font-size="11" text-anchor="middle" '
            f'transform="rotate(-90 12 {height / 2})">{_esc(ylabel)}</text></svg>')


def bar_chart(labels: list[str], values: list[float], *, title: str, ylabel: str, xlabel: str = "") -> str:
    """Vertical bars, one per label (labels rotated under the axis)."""
    height = _H + 90
    vals = [0.0 if v is None or not math.isfinite(v) else float(v) for v in values]
    lo, hi = min(0.0, *vals) if vals else 0.0, max(0.0, *vals) if vals else 1.0
    hi = hi if hi > lo else lo + 1.0
    y = _scale(lo, hi, height - _PAD_B - 90, _PAD_T)
    n = max(len(vals), 1)
    bw = (_W - _PAD_L - _PAD_R) / n
    body = []
    for i, (lab, v) in enumerate(zip(labels, vals)):
        x0 = _PAD_L + i * bw + bw * 0.1
        top, base = y(max(v, 0.0)), y(min(v, 0.0))
        body.append(f'<rect x="{x0:.1f}" y="{top:.1f}" width="{bw * 0.8:.1f}" height="{max(base - top, 0.5):.1f}" '
                    f'fill="{_COLOURS[0]}"><title>{_esc(lab)}: {v:.4g}</title></rect>')
        cx = x0 + bw * 0.4
        body.append(f'<text x="{cx:.1f}" y="{height - _PAD_B - 84}" font-size="9" text-anchor="end" '
                    f'transform="rotate(-45 {cx:.1f} {height - _PAD_B - 84})">{_esc(lab[-32:])}</text>')
    svg = _frame(title, xlabel, ylabel, body, lo, hi, height - 90)
    return svg.replace(f'height="{_H}"', f'height="{height}"', 1)


def histogram(counts: list[int], lo: float, hi: float, *, title: str, marks: tuple[float, float] | None = None,
              xlabel: str = "value") -> str:
    """Bars over [lo, hi]; ``marks`` draws the int8 range as two red lines."""
    top = max(max(counts, default=1), 1)
    y = _scale(0, top, _H - _PAD_B, _PAD_T)
    span_lo = min(lo, marks[0]) if marks else lo
    span_hi = max(hi, marks[1]) if marks else hi
    x = _scale(span_lo, span_hi, _PAD_L, _W - _PAD_R)
    bw = (hi - lo) / max(len(counts), 1)
    body = []
    for i, c in enumerate(counts):
        x0, x1 = x(lo + i * bw), x(lo + (i + 1) * bw)
        body.append(f'<rect x="{x0:.1f}" y="{y(c):.1f}" width="{max(x1 - x0 - 0.5, 0.5):.1f}" '
                    f'height="{y(0) - y(c):.1f}" fill="{_COLOURS[0]}"/>')
    if marks:
        for m in marks:
            body.append(f'<line x1="{x(m):.1f}" x2="{x(m):.1f}" y1="{_PAD_T}" y2="{_H - _PAD_B}" stroke="#d62728" '
                        f'stroke-dasharray="4 3"><title>int8 range end {m:.4g}</title></line>')
    for v in (span_lo, span_hi):
        body.append(f'<text x="{x(v):.1f}" y="{_H - _PAD_B + 14}" font-size="10" text-anchor="middle">{v:.3g}</text>')
    return _frame(title, xlabel + (" (red: int8 range)" if marks else ""), "count", body, 0, top)


def overlaid_histograms(samples: dict[str, list[float]], *, title: str, xlabel: str, bins: int = 30) -> str:
    """Histograms of several samples over one shared, data-zoomed range (translucent bars, a legend and each
    sample's median as a dashed line)."""
    vals = [v for s in samples.values() for v in s if math.isfinite(v)]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    width = (hi - lo) / bins
    counts = {}
    for name, s in samples.items():
        c = [0] * bins
        for v in s:
            if math.isfinite(v):
                c[min(int((v - lo) / width), bins - 1)] += 1
        counts[name] = c
    top = max(max(c) for c in counts.values()) or 1
    x = _scale(lo, hi, _PAD_L, _W - _PAD_R - 150)
    y = _scale(0, top, _H - _PAD_B, _PAD_T)
    body = []
    for i, (name, c) in enumerate(counts.items()):
        col = _COLOURS[i % len(_COLOURS)]
        for b, n in enumerate(c):
            if n:
                x0, x1 = x(lo + b * width), x(lo + (b + 1) * width)
                body.append(f'<rect x="{x0:.1f}" y="{y(n):.1f}" width="{max(x1 - x0 - 0.5, 0.5):.1f}" '
                            f'height="{y(0) - y(n):.1f}" fill="{col}" fill-opacity="0.55"/>')
        s = sorted(v for v in samples[name] if math.isfinite(v))
        med = s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
        body.append(f'<line x1="{x(med):.1f}" x2="{x(med):.1f}" y1="{_PAD_T}" y2="{_H - _PAD_B}" stroke="{col}" '
                    f'stroke-dasharray="4 3"><title>{_esc(name)} median {med:.4g}</title></line>')
        body.append(f'<text x="{_W - _PAD_R - 140}" y="{_PAD_T + 12 * i + 8}" font-size="10" fill="{col}">'
                    f'{_esc(name[-22:])} (median {med:.3g})</text>')
    for v in (lo, hi):
        body.append(f'<text x="{x(v):.1f}" y="{_H - _PAD_B + 14}" font-size="10" text-anchor="middle">{v:.3g}</text>')
    return _frame(title, xlabel, "runs", body, 0, top)


def line_chart(series: dict[str, list[tuple[float, float]]], *, title: str, xlabel: str, ylabel: str,
               ylim: tuple[float, float] | None = None) -> str:
    """One polyline per series of (x, y) points, with a legend."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    lo, hi = ylim or (min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1)
    x = _scale(min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1, _PAD_L + 8, _W - _PAD_R - 150)
    y = _scale(lo, hi, _H - _PAD_B, _PAD_T)
    body = []
    for i, (name, s) in enumerate(series.items()):
        col = _COLOURS[i % len(_COLOURS)]
        body.append(f'<polyline fill="none" stroke="{col}" stroke-width="2" points="'
                    + " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in s) + '"/>')
        body += [f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="2.5" fill="{col}"/>' for a, b in s]
        body.append(f'<text x="{_W - _PAD_R - 140}" y="{_PAD_T + 12 * i + 8}" font-size="10" fill="{col}">'
                    f'{_esc(name[-28:])}</text>')
    for v in sorted(set(xs)):
        body.append(f'<text x="{x(v):.1f}" y="{_H - _PAD_B + 14}" font-size="10" text-anchor="middle">{v:g}</text>')
    return _frame(title, xlabel, ylabel, body, lo, hi)


def scatter(points: list[tuple[float, float, str]], *, title: str, xlabel: str, ylabel: str) -> str:
    """Labelled points (x, y, label)."""
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    pad_x = (max(xs) - min(xs)) * 0.1 or max(abs(xs[0]) * 0.1, 1e-3)
    pad_y = (max(ys) - min(ys)) * 0.1 or max(abs(ys[0]) * 0.01, 1e-3)
    lo, hi = min(ys) - pad_y, max(ys) + pad_y
    x = _scale(min(xs) - pad_x, max(xs) + pad_x, _PAD_L, _W - _PAD_R)
    y = _scale(lo, hi, _H - _PAD_B, _PAD_T)
    body = []
    for i, (a, b, lab) in enumerate(points):
        col = _COLOURS[i % len(_COLOURS)]
        body.append(f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="5" fill="{col}"><title>{_esc(lab)}: '
                    f'{a:.4g}, {b:.4g}</title></circle>'
                    f'<text x="{x(a) + 7:.1f}" y="{y(b) - 6:.1f}" font-size="10" fill="{col}">{_esc(lab)}</text>')
    for v in (min(xs), max(xs)):
        body.append(f'<text x="{x(v):.1f}" y="{_H - _PAD_B + 14}" font-size="10" text-anchor="middle">{v:.3g}</text>')
    return _frame(title, xlabel, ylabel, body, lo, hi)


def table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, sections: list[tuple[str, str]]) -> str:
    """A whole HTML document: ``sections`` are (heading, inner HTML) pairs; each section is a
    ``<section id=...>`` named after its heading (``Gate verdict`` -> ``gate-verdict``)."""
    css = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
           "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
           "th{background:#f4f4f4}td:first-child{text-align:left}.flag{color:#b00;font-weight:bold}"
           ".pass{color:#080;font-weight:bold;font-size:20px}.fail{color:#b00;font-weight:bold;font-size:20px}"
           "svg{margin:6px 0;display:block}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title><style>{css}</style>"
             f"</head><body><h1>{_esc(title)}</h1>"]
    for heading, inner in sections:
        anchor = "-".join("".join(ch if ch.isalnum() else " " for ch in heading.lower()).split())
        parts.append(f"<section id='{anchor}'><h2>{_esc(heading)}</h2>{inner}</section>")
    parts.append("</body></html>\n")
    return "".join(parts)


def preformatted(text: str) -> str:
    return f"<pre>{_esc(text)}</pre>"


def paragraph(text: str, cls: str | None = None) -> str:
    return f"<p{f' class={cls!r}' if cls else ''}>{_esc(text)}</p>"


def value(v, pct: bool = False, nd: int = 1) -> str:
    """A table cell: ``—`` for a missing figure, a percentage of a 0..1 share, or ``nd`` decimals."""
    if v is None:
        return "—"
    return f"{100 * v:.2f}%" if pct else f"{v:.{nd}f}"
