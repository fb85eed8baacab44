"""Self-contained HTML reports (inline SVG charts and PNG images, no external files).

Used by ``csakd:fuse`` (run report) and ``csakd:evaluate`` (metrics, per-band
PSNR, spectra at sample pixels, error map).  Pages need no JavaScript, no
network and no plotting library, so they open anywhere QGIS runs.
"""

from __future__ import annotations

import base64
import html
import os
from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from csakd_qgis.quality.quicklook import encode_png

if TYPE_CHECKING:
    from csakd_qgis.fusion.report import FuseReport

#: Colours of successive chart series.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

Series = Tuple[Union[Sequence[float], np.ndarray], Union[Sequence[float], np.ndarray]]


def _ticks(low: float, high: float, count: int = 5) -> np.ndarray:
    """``count`` evenly spaced tick values from ``low`` to ``high``."""
    return np.linspace(low, high, count)


def svg_line_chart(series: Mapping[str, Series], *, title: str, xlabel: str, ylabel: str,
                   width: int = 640, height: int = 280) -> str:
    """An SVG line chart of named ``(x, y)`` series; NaN points break the line."""
    left, right, top, bottom = 60, 16, 28, 44
    xs = np.concatenate([np.asarray(x, float) for x, _ in series.values()] or [np.zeros(1)])
    ys = np.concatenate([np.asarray(y, float) for _, y in series.values()] or [np.zeros(1)])
    xs, ys = xs[np.isfinite(xs)], ys[np.isfinite(ys)]
    x0, x1 = (float(xs.min()), float(xs.max())) if xs.size else (0.0, 1.0)
    y0, y1 = (float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0)
    x1, y1 = (x1 if x1 > x0 else x0 + 1.0), (y1 if y1 > y0 else y0 + 1.0)
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + (1.0 - (y - y0) / (y1 - y0)) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>']
    for value in _ticks(x0, x1):
        parts.append(f'<text x="{px(value):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{value:.4g}</text>')
    for value in _ticks(y0, y1):
        parts.append(f'<text x="{left - 4}" y="{py(value) + 4:.1f}" text-anchor="end">{value:.4g}</text>')
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(value):.1f}" y2="{py(value):.1f}" '
                     'stroke="#eee"/>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">{html.escape(xlabel)}</text>')
    parts.append(f'<text x="12" y="{top + plot_h / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + plot_h / 2})">{html.escape(ylabel)}</text>')
    for number, (name, (x, y)) in enumerate(series.items()):
        colour = PALETTE[number % len(PALETTE)]
        runs, current = [], []
        for xv, yv in zip(np.asarray(x, float), np.asarray(y, float)):
            if np.isfinite(xv) and np.isfinite(yv):
                current.append(f"{px(xv):.1f},{py(yv):.1f}")
            elif current:
                runs.append(current)
                current = []
        runs.append(current)
        for run in runs:
            if run:
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(run)}"/>')
        parts.append(f'<text x="{left + 8}" y="{top + 14 + 13 * number}" fill="{colour}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def img_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG inlined as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="image-rendering:pixelated"/>'


def heat_png(values: np.ndarray, valid: Optional[np.ndarray] = None, *, upper: Optional[float] = None) -> bytes:
    """``(H, W)`` non-negative values → PNG from white (0) to dark red (``upper``, default 99th pct)."""
    values = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(values) if valid is None else (valid & np.isfinite(values))
    if upper is None:
        upper = float(np.percentile(values[valid], 99.0)) if valid.any() else 1.0
    t = np.clip(np.nan_to_num(values / max(upper, 1e-12)), 0.0, 1.0)
    rgba = np.empty(values.shape + (4,), np.uint8)
    rgba[..., 0] = (255 - 115 * t).astype(np.uint8)
    rgba[..., 1] = (255 * (1 - t)).astype(np.uint8)
    rgba[..., 2] = (255 * (1 - t)).astype(np.uint8)
    rgba[..., 3] = np.where(valid, 255, 0)
    return encode_png(rgba)


def table(rows: Iterable[Tuple[str, object]], header: Tuple[str, str] = ("", "")) -> str:
    """A two-column HTML table; floats shown with 4 significant digits."""
    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))

    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{cell(v)}</td></tr>" for k, v in rows)
    head = f"<tr><th>{html.escape(header[0])}</th><th>{html.escape(header[1])}</th></tr>" if any(header) else ""
    return f"<table>{head}{body}</table>"


def write_page(path: str, title: str, sections: Sequence[Tuple[str, str]]) -> None:
    """Write an HTML page with ``(heading, inner HTML)`` sections, atomically."""
    style = ("body{font-family:sans-serif;max-width:980px;margin:auto;padding:1em}"
             "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}")
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
    temporary = f"{path}.partial-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as stream:
        stream.write(page)
    os.replace(temporary, path)


def write_fuse_report(report: FuseReport, path: str) -> None:
    """HTML page of a fusion run (the engine's :class:`~csakd_qgis.fusion.report.FuseReport`).

    Shows the run's summary lines (grid, scale, shift, tiles, device,
    notes), the time per stage and a true-colour quicklook of the output.
    """
    from csakd_qgis.quality.quicklook import true_colour_png

    lines = "".join(f"<li>{html.escape(line)}</li>" for line in report.summary_lines())
    timings = table(((stage, float(seconds)) for stage, seconds in report.timings.items()), ("stage", "seconds"))
    quicklook = img_tag(true_colour_png(report.output, max_size=800), "fused image, true colour")
    write_page(path, f"CSAKD fusion: {os.path.basename(report.output)}",
               [("Run", f"<ul>{lines}</ul>"), ("Time per stage", timings), ("Output (true colour)", quicklook)])
