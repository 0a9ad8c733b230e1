"""Charts drawn on the server as SVG (no script, no inline style: presentation attributes only,
so the pages' Content-Security-Policy holds): a heatmap and a lift chart with intervals."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

LABEL_CHARS = 34  # a row label of the lift chart is cut to fit its 220 pixels


def _shade(t: float) -> str:
    """White (0) to a deep blue (1)."""
    t = min(max(t, 0.0), 1.0)
    r, g, b = (int(255 + (c - 255) * t) for c in (31, 78, 160))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(
    rows: Sequence[str],
    cols: Sequence[str],
    values: dict[tuple[str, str], float],
    label: Callable[[float], str],
    title: str,
) -> Markup:
    """A table of shaded cells: ``values[(row, col)]`` (missing: blank), ``label`` writes a value."""
    # the row labels' column as wide as the longest label (German category names are long)
    cw, ch, top = 74, 26, 28
    left = max(140, 16 + int(7 * max((len(r) for r in rows), default=0)))
    w, h = left + cw * len(cols) + 4, top + ch * len(rows) + 4
    found = [v for v in values.values() if v == v]
    lo, hi = (min(found), max(found)) if found else (0.0, 1.0)
    span = (hi - lo) or 1.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {w} {h}" '
        f'width="{w}" height="{h}"><title>{escape(title)}</title>'
    ]
    for j, c in enumerate(cols):
        x = left + j * cw + cw / 2
        out.append(f'<text x="{x:.0f}" y="{top - 10}" text-anchor="middle" font-size="12">{escape(c)}</text>')
    for i, r in enumerate(rows):
        y = top + i * ch
        out.append(
            f'<text x="{left - 8}" y="{y + ch / 2 + 4:.0f}" text-anchor="end" font-size="12">{escape(r)}</text>'
        )
        for j, c in enumerate(cols):
            v = values.get((r, c))
            x = left + j * cw
            if v is None or v != v:
                out.append(f'<rect x="{x}" y="{y}" width="{cw - 2}" height="{ch - 2}" fill="#f2f2f2"/>')
                continue
            t = (v - lo) / span
            ink = "#ffffff" if t > 0.55 else "#111111"
            out.append(
                f'<rect x="{x}" y="{y}" width="{cw - 2}" height="{ch - 2}" fill="{_shade(t)}">'
                f"<title>{escape(r)}, {escape(c)}: {escape(label(v))}</title></rect>"
                f'<text x="{x + cw / 2 - 1:.0f}" y="{y + ch / 2 + 4:.0f}" text-anchor="middle" '
                f'font-size="11" fill="{ink}">{escape(label(v))}</text>'
            )
    out.append("</svg>")
    return Markup("".join(out))


def lift_chart(
    bars: Sequence[tuple[str, float | None, float | None, float | None]],
    label: Callable[[float], str],
    title: str,
) -> Markup:
    """One row per cell: (name, estimate, low, high) as a dot with its interval around zero."""
    shown = [b for b in bars if b[1] is not None]
    if not shown:
        return Markup("")
    width, rh, top = 360, 24, 10
    longest = max(min(len(b[0]), LABEL_CHARS) for b in shown)
    left = max(220, 16 + int(7 * longest))  # no label cut at the left edge
    ends = [abs(v) for b in shown for v in b[1:] if v is not None] or [1.0]
    scale = (width / 2 - 10) / (max(ends) or 1.0)
    zero = left + width / 2
    h = top + rh * len(shown) + 24
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {left + width + 90} {h}" '
        f'width="{left + width + 90}" height="{h}"><title>{escape(title)}</title>',
        f'<line x1="{zero}" y1="{top - 4}" x2="{zero}" y2="{h - 20}" stroke="#888" stroke-dasharray="3,3"/>',
    ]
    for i, (name, est, low, high) in enumerate(shown):
        y = top + i * rh + rh / 2
        assert est is not None
        short = (
            name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"
        )  # the whole name in its title
        out.append(
            f'<text x="{left - 8}" y="{y + 4:.0f}" text-anchor="end" font-size="12">{escape(short)}'
            f"<title>{escape(name)}</title></text>"
        )
        if low is not None and high is not None:
            out.append(
                f'<line x1="{zero + low * scale:.1f}" y1="{y:.0f}" x2="{zero + high * scale:.1f}" y2="{y:.0f}" '
                'stroke="#1f4ea0" stroke-width="2"/>'
            )
        colour = (
            "#1a7f37"
            if low is not None and low > 0
            else "#b42318"
            if high is not None and high < 0
            else "#1f4ea0"
        )
        out.append(f'<circle cx="{zero + est * scale:.1f}" cy="{y:.0f}" r="5" fill="{colour}"/>')
        out.append(f'<text x="{left + width + 6}" y="{y + 4:.0f}" font-size="11">{escape(label(est))}</text>')
    out.append(f'<text x="{zero}" y="{h - 6}" text-anchor="middle" font-size="11">0</text></svg>')
    return Markup("".join(out))
