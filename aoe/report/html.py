"""``aoe report RUN_ID --html``: one self-contained page that shows where time and money went.

Everything is inline (CSS, a few lines of JS, SVG drawn here), so the file opens from a
CI artifact with no network. Sections: totals, the DAG per workflow (laid out by levels,
nodes colored by state, the critical path drawn thick), a Gantt timeline of every
attempt (waiting before the first call hatched, calls solid, backoff between attempts
dashed), cost by module and by model as bars, and the agent table. Figures carry
``data-*`` attributes so tests (and scripts) can read them back exactly.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from html import escape
from itertools import pairwise

from aoe.cost.money import decimal_text, format_usd
from aoe.graph import WorkflowGraph
from aoe.ledger.records import AgentDetail, RunDetail, WorkflowDetail
from aoe.report.timeline import agent_duration_s, attempt_bars, cost_by, graph_of, run_bounds

COLORS = {
    "COMPLETED": "#2e9d57",
    "FAILED": "#d64545",
    "RATE_LIMITED": "#e07b39",
    "BUDGET_EXCEEDED": "#9b51e0",
    "CANCELLED": "#7a7a7a",
    "SKIPPED": "#b8b8b8",
    "INTERRUPTED": "#7a7a7a",
    "RUNNING": "#3b82f6",
    "PENDING": "#d0d0d0",
}
CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2328}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#555}.figs{display:flex;gap:24px;margin:12px 0}.fig{background:#f6f8fa;padding:8px 14px;
border-radius:6px}.fig b{display:block;font-size:20px}table{border-collapse:collapse;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #eee;text-align:left}
th{cursor:pointer;background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}.state{font-weight:600}
svg text{font:12px system-ui,sans-serif}.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:12px;height:12px;vertical-align:middle;margin-right:4px}
.crit{color:#b45309;font-weight:600}
"""
JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.dataset.asc !== '1';
    th.dataset.asc = asc ? '1' : '0';
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.sort || a.cells[col].textContent;
      var y = b.cells[col].dataset.sort || b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _dag(wf: WorkflowDetail, graph: WorkflowGraph) -> str:
    states = {a.agent_id: a.state for a in wf.agents}
    crit = graph.critical_path
    nodes = graph.agent_ids
    columns = dict(enumerate(graph.levels))
    w, h, gap_x, gap_y = 150, 36, 60, 18
    pos = {
        n: (20 + d * (w + gap_x), 20 + i * (h + gap_y))
        for d, col in columns.items()
        for i, n in enumerate(col)
    }
    width = 40 + (max(columns, default=0) + 1) * (w + gap_x)
    height = 40 + max((len(c) for c in columns.values()), default=1) * (h + gap_y)
    on_path = set(pairwise(crit))
    parts = [
        f'<svg class="dag" width="{width}" height="{height}" role="img" '
        f'aria-label="dependency graph of {escape(wf.workflow_key)}">',
        '<defs><marker id="arr" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto">'
        '<path d="M0,0L10,5L0,10z" fill="#888"/></marker></defs>',
    ]
    for node in nodes:
        for dep in graph.needs[node]:
            if dep not in pos:
                continue
            (x1, y1), (x2, y2) = pos[dep], pos[node]
            crit_edge = (dep, node) in on_path
            parts.append(
                f'<line x1="{x1 + w}" y1="{y1 + h / 2}" x2="{x2}" y2="{y2 + h / 2}" '
                f'stroke="{"#b45309" if crit_edge else "#999"}" '
                f'stroke-width="{4 if crit_edge else 1.5}" marker-end="url(#arr)"/>'
            )
    for node in nodes:
        x, y = pos[node]
        state = states.get(node, "RUNNING" if wf.state == "RUNNING" else "SKIPPED")
        crit_node = node in crit
        parts.append(
            f'<g class="node" data-agent="{escape(node)}" data-state="{escape(state)}">'
            f"<title>{escape(node)}: {escape(state)}</title>"
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" '
            f'fill="{COLORS.get(state, "#ccc")}" stroke="{"#b45309" if crit_node else "#444"}" '
            f'stroke-width="{3 if crit_node else 1}"/>'
            f'<text x="{x + w / 2}" y="{y + h / 2 + 4}" text-anchor="middle" fill="#fff">'
            f"{escape(node[:20])}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _gantt(run: RunDetail) -> str:
    t0, t1 = run_bounds(run)
    rows = [(wf, a) for wf in run.workflows for a in wf.agents]
    label_w, chart_w, row_h = 220, 760, 22
    scale = chart_w / (t1 - t0)
    height = 30 + len(rows) * row_h

    def x(ts: float) -> float:
        return round(label_w + (ts - t0) * scale, 2)

    parts = [
        f'<svg class="gantt" width="{label_w + chart_w + 20}" height="{height}" role="img" '
        'aria-label="timeline of every attempt"><defs><pattern id="hatch" width="6" height="6" '
        'patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" '
        'fill="#fde68a"/><line x1="0" y1="0" x2="0" y2="6" stroke="#d97706" stroke-width="2"/>'
        "</pattern></defs>"
    ]
    for tick in range(6):
        tx = label_w + chart_w * tick / 5
        parts.append(
            f'<line x1="{tx}" y1="14" x2="{tx}" y2="{height}" stroke="#eee"/>'
            f'<text x="{tx}" y="11" text-anchor="middle" fill="#666">'
            f"{(t1 - t0) * tick / 5:.1f}s</text>"
        )
    for i, (wf, agent) in enumerate(rows):
        y = 20 + i * row_h
        parts.append(
            f'<text x="4" y="{y + 14}">{escape(wf.workflow_key[:14])} / '
            f"{escape(agent.agent_id[:18])}</text>"
        )
        bars = attempt_bars(agent)
        for prev, bar in pairwise(bars):
            parts.append(
                f'<line class="backoff" x1="{x(prev.end)}" y1="{y + 9}" x2="{x(bar.start)}" '
                f'y2="{y + 9}" stroke="#888" stroke-dasharray="3,3"><title>backoff before '
                f"attempt {bar.attempt}</title></line>"
            )
        for bar in bars:
            tip = (
                f"{agent.agent_id} attempt {bar.attempt}: {bar.state}, "
                f"{bar.end - bar.start:.2f}s" + (f" ({bar.error})" if bar.error else "")
            )
            parts.append(
                f'<g class="attempt" data-agent="{escape(agent.agent_id)}" '
                f'data-attempt="{bar.attempt}" data-state="{escape(bar.state)}">'
                f"<title>{escape(tip)}</title>"
            )
            color = COLORS.get(bar.state, "#ccc")
            for seg in bar.segments:
                width = max(x(seg.end) - x(seg.start), 1.0)
                fill = {"wait": "url(#hatch)", "work": "#cbd5e1"}.get(seg.kind, color)
                parts.append(
                    f'<rect class="seg-{seg.kind}" x="{x(seg.start)}" y="{y + 2}" '
                    f'width="{width:.2f}" height="{row_h - 6}" fill="{fill}"/>'
                )
            if not bar.segments:
                parts.append(
                    f'<rect x="{x(bar.start)}" y="{y + 2}" width="1" height="{row_h - 6}" '
                    f'fill="{color}"/>'
                )
            parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _bars(title: str, rows: list[tuple[str, Decimal]], kind: str) -> str:
    if not rows:
        return f"<p>No {escape(title)} recorded.</p>"
    top = max(float(v) for _, v in rows) or 1.0
    label_w, bar_w, row_h = 220, 420, 22
    parts = [
        f'<svg class="bars" data-by="{kind}" width="{label_w + bar_w + 110}" '
        f'height="{10 + len(rows) * row_h}" role="img" aria-label="{escape(title)}">'
    ]
    for i, (name, value) in enumerate(rows):
        y = 5 + i * row_h
        w = max(bar_w * float(value) / top, 1.0)
        parts.append(
            f'<g class="bar" data-name="{escape(name)}" data-usd="{value}">'
            f'<text x="4" y="{y + 14}">{escape(name[:32])}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.2f}" height="{row_h - 6}" '
            f'fill="#3b82f6"/><text x="{label_w + w + 6:.2f}" y="{y + 14}">'
            f"{format_usd(value)}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _agent_row(wf: WorkflowDetail, agent: AgentDetail, crit: set[str]) -> str:
    duration = agent_duration_s(agent)
    mark = (
        ' <span class="crit" title="on the critical path">&#9733;</span>'
        if agent.agent_id in crit
        else ""
    )
    return (
        f'<tr data-workflow="{escape(wf.workflow_key)}" data-agent="{escape(agent.agent_id)}" '
        f'data-state="{escape(agent.state)}" data-usd="{agent.cost_usd}">'
        f"<td>{escape(wf.workflow_key)}</td><td>{escape(agent.agent_id)}{mark}</td>"
        f"<td>{escape(agent.module or '')}</td><td>{escape(agent.model)}</td>"
        f'<td class="state" style="color:{COLORS.get(agent.state, "#333")}">'
        f'{escape(agent.state)}</td><td class="num">{len(agent.attempts)}</td>'
        f'<td class="num">{agent.input_tokens}</td><td class="num">{agent.output_tokens}</td>'
        f'<td class="num cost" data-sort="{decimal_text(agent.cost_usd)}">'
        f"{format_usd(agent.cost_usd)}</td>"
        f'<td class="num" data-sort="{duration:.3f}">{duration:.2f}</td></tr>'
    )


def render_html(run: RunDetail) -> str:
    """The whole page for one run, as a string."""
    summary = run.run
    graphs = {wf.workflow_key: graph_of(wf) for wf in run.workflows}
    legend = "".join(
        f'<span><i class="sw" style="background:{c}"></i>{s}</span>'
        for s, c in COLORS.items()
        if s not in ("PENDING", "RUNNING")
    )
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>aoe run {escape(summary.run_id)}</title><style>{CSS}</style></head><body>",
        f"<h1>aoe run <code>{escape(summary.run_id)}</code>: "
        f'<span id="run-state">{escape(summary.state)}</span></h1>',
        f'<p class="meta">{escape(summary.command)}<br>started {_when(summary.started_at)}, '
        f"ended {_when(summary.ended_at)}{' (simulated)' if summary.simulate else ''}</p>",
        '<div class="figs">',
        '<div class="fig">total cost<b id="total-cost" '
        f'data-usd="{decimal_text(summary.cost_usd)}">'
        f"{format_usd(summary.cost_usd)}</b></div>",
        f'<div class="fig">tokens in / out<b id="tokens">{summary.input_tokens} / '
        f"{summary.output_tokens}</b></div>",
        f'<div class="fig">agents completed / failed<b id="agents">{summary.agents_completed} / '
        f"{summary.agents_failed}</b></div>",
        f'<div class="fig">workflows<b id="workflows">{summary.workflows}</b></div></div>',
        f'<p class="legend">{legend}</p>',
        "<h2>Dependency graph</h2>",
    ]
    for wf in run.workflows:
        graph = graphs[wf.workflow_key]
        out.append(
            f"<h3>{escape(wf.workflow_key)} <small>({escape(wf.state)}, "
            f"{format_usd(wf.cost_usd)})</small></h3>"
        )
        out.append(
            f'<p>Critical path: <span class="crit critical-path" '
            f'data-workflow="{escape(wf.workflow_key)}">'
            f"{escape(' → '.join(graph.critical_path)) or '-'}</span></p>"
        )
        out.append(_dag(wf, graph))
    out += [
        "<h2>Timeline</h2>",
        '<p class="legend"><span><i class="sw" style="background:#fde68a;border:1px solid '
        '#d97706"></i>waiting (rate limit, budget) before the first call</span><span><i class="sw" '
        'style="background:#2e9d57"></i>provider call (colored by attempt state)</span><span>'
        '<i class="sw" style="background:#cbd5e1"></i>between calls (tools, validation)</span>'
        "<span>- - - backoff before a retry</span></p>",
        _gantt(run),
        "<h2>Cost by module</h2>",
        _bars("cost by module", cost_by(run, "module"), "module"),
        "<h2>Cost by model</h2>",
        _bars("cost by model", cost_by(run, "model"), "model"),
        "<h2>Agents</h2>",
        '<table class="sortable" id="agents-table"><thead><tr><th>workflow</th><th>agent</th>'
        "<th>module</th><th>model</th><th>state</th><th>attempts</th><th>input tokens</th>"
        "<th>output tokens</th><th>cost</th><th>time (s)</th></tr></thead><tbody>",
    ]
    for wf in run.workflows:
        on_path = set(graphs[wf.workflow_key].critical_path)
        out += [_agent_row(wf, a, on_path) for a in wf.agents]
    out += ["</tbody></table>", f"<script>{JS}</script>", "</body></html>"]
    return "\n".join(out) + "\n"
