"""Draw the plugin dependency graph as SVG (for notebooks and admin pages).

A layered drawing: a plugin's column is the length of its longest dependency
chain, so dependencies always sit left of their dependents; colour shows the
plugin's status. No graphviz needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape

STATUS_COLOURS = {
    "running": "#2e7d32",
    "starting": "#f9a825",
    "pending": "#9e9e9e",
    "restarting": "#ef6c00",
    "failed": "#c62828",
    "blocked": "#6a1b9a",
    "stopped": "#616161",
    "stopping": "#616161",
}

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 210, 44, 70, 22, 16


def layers(order: list[str], edges: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Column of each plugin: 0 for no dependencies, else 1 + deepest dependency."""
    needs: dict[str, list[str]] = {p: [] for p in order}
    for dependent, dependency in edges:
        if dependent in needs and dependency in needs:
            needs[dependent].append(dependency)
    depth: dict[str, int] = {}
    for plugin in order:  # load order: dependencies come first
        depth[plugin] = 1 + max((depth[d] for d in needs[plugin]), default=-1)
    return depth


def dependency_svg(
    order: list[str],
    edges: Iterable[tuple[str, str]],
    status: Mapping[str, str] | None = None,
) -> str:
    """An SVG drawing of ``edges`` (dependent, dependency) over plugins in ``order``."""
    edges = list(edges)
    status = status or {}
    depth = layers(order, edges)
    rows: dict[int, int] = {}
    position: dict[str, tuple[int, int]] = {}
    for plugin in order:
        col = depth[plugin]
        row = rows.get(col, 0)
        rows[col] = row + 1
        position[plugin] = (PAD + col * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
    width = PAD * 2 + (max(depth.values(), default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values(), default=1) * (BOX_H + GAP_Y) - GAP_Y
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="8" refY="4" '
        'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>',
    ]
    for dependent, dependency in edges:
        if dependent not in position or dependency not in position:
            continue
        x1, y1 = position[dependency]
        x2, y2 = position[dependent]
        parts.append(
            f'<line x1="{x1 + BOX_W}" y1="{y1 + BOX_H / 2}" x2="{x2}" y2="{y2 + BOX_H / 2}" '
            'stroke="#555" marker-end="url(#arrow)"/>'
        )
    for plugin in order:
        x, y = position[plugin]
        state = status.get(plugin, "unknown")
        colour = STATUS_COLOURS.get(state, "#424242")
        parts.append(
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" '
            f'fill="white" stroke="{colour}" stroke-width="2"/>'
            f'<text x="{x + 8}" y="{y + 18}">{escape(plugin)}</text>'
            f'<text x="{x + 8}" y="{y + 34}" fill="{colour}">{escape(state)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
