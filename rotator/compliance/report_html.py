"""`rotator report --format html`: one self-contained page for auditors (contract §2).

The page holds the inventory (the same rows as the other formats), a
timeline per credential drawn from the audit file as inline SVG (each key:
issued, live, in grace, revoked), and the result of verifying the audit
chain (`rotator.audit.verify.verify`).

Invariants:
- self-contained: one HTML document with inline CSS and SVG; no script, no
  external stylesheet, font, image or link target is fetched, and a
  Content-Security-Policy (`default-src 'none'`) says so to the browser;
- every string from a file, a record or the audit trail (names, owners,
  descriptions, key ids, errors) is escaped for HTML;
- no secret value: the rows are the report's (see `rotator.compliance.report`), and the
  timeline reads only event names, times and key ids from the audit lines.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rotator.audit.verify import VerifyResult, verify
from rotator.core.clock import parse_rfc3339, to_rfc3339

# One key's life, as the audit events tell it.
ISSUED, PROMOTED, DEACTIVATED, REVOKED, ROLLED_BACK = (
    "credential.issued", "credential.promoted", "credential.deactivated", "credential.revoked", "rotation.rolled_back",
)
COLOURS = {"issued": "#9aa5b1", "live": "#2f9e44", "grace": "#f08c00", "revoked": "#c92a2a"}
WIDTH, LABEL_W, ROW_H, TOP = 960, 210, 22, 26


@dataclass
class KeySpan:
    """One key of one credential: when it was issued, went live, was superseded (grace began) and revoked."""

    key_id: str
    issued: datetime | None = None
    live: datetime | None = None
    grace: datetime | None = None
    revoked: datetime | None = None
    rolled_back: bool = False


def timelines(lines: Iterable[dict[str, Any]]) -> dict[str, list[KeySpan]]:
    """Key spans per credential, in the order the keys were issued."""
    spans: dict[str, dict[str, KeySpan]] = {}
    for event in lines:
        name, key_id, kind = event.get("credential"), event.get("key_id"), event.get("event")
        if not isinstance(name, str) or not isinstance(key_id, str) or kind not in {ISSUED, PROMOTED, DEACTIVATED, REVOKED, ROLLED_BACK}:
            continue
        try:
            at = parse_rfc3339(str(event.get("timestamp")))
        except (TypeError, ValueError):
            continue
        keys = spans.setdefault(name, {})
        span = keys.setdefault(key_id, KeySpan(key_id))
        if kind == ISSUED:
            span.issued = span.issued or at
        elif kind == PROMOTED:
            span.live = span.live or at
            for other in keys.values():  # the key it supersedes enters its grace period
                if other is not span and other.live is not None and other.grace is None and other.revoked is None:
                    other.grace = at
        elif kind == DEACTIVATED:
            span.grace = span.grace or at
        elif kind == REVOKED:
            span.revoked = span.revoked or at
        else:
            span.rolled_back, span.revoked = True, span.revoked or at
    return {name: list(keys.values()) for name, keys in spans.items()}


def read_audit(path: Path) -> list[dict[str, Any]]:
    """The audit file's events; a line that is not a JSON object is left to the verification to report."""
    events = []
    with path.open("rb") as stream:
        for raw in stream:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                events.append(record)
    return events


def render_html(report: dict[str, Any], audit_file: Path | None) -> str:
    """The whole page. `audit_file`: the chain to draw and verify (None: the page says there is none)."""
    from rotator.compliance.report import COLUMNS, _cells  # the inventory's columns and cells, as the other formats show them

    generated = report["generated_at"]
    if audit_file is not None and audit_file.is_file():
        result: VerifyResult | None = verify([audit_file])
        spans = timelines(read_audit(audit_file))
        audit_note = ""
    else:
        result, spans = None, {}
        audit_note = "No audit file was given (ROTATOR_AUDIT_FILE or --audit-file)" if audit_file is None else f"The audit file {audit_file} does not exist"
    s = report["summary"]
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        "<title>rotator compliance report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>rotator compliance report</h1>",
        f"<p class=\"meta\">Generated {e(to_rfc3339(generated))}: {s['credentials']} credential(s), {s['overdue']} overdue, "
        f"{s['failing']} failing, {s['unused_keys']} unused key(s), {s['unmanaged_keys']} unmanaged key(s), "
        f"{s['not_listable']} not listable, {s['paused']} paused.</p>",
        "<h2>Audit chain</h2>",
        _verification(result, audit_file, audit_note),
        "<h2>Inventory</h2>",
        '<table class="inventory"><thead><tr>' + "".join(f"<th>{e(title)}</th>" for _, title in COLUMNS) + "</tr></thead><tbody>",
    ]
    for row in report["credentials"]:
        cells = _cells(row)
        flag = ' class="overdue"' if row.get("overdue") else ""
        parts.append(f"<tr{flag}>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    parts.append("</tbody></table>")
    parts.append("<h2>Timeline per credential</h2>")
    parts.append(_legend())
    names = [row["credential"] for row in report["credentials"]]
    names += sorted(n for n in spans if n not in set(names))  # in the audit file only: a credential since removed
    for name in names:
        parts.append(f'<section class="timeline"><h3>{e(name)}</h3>')
        keys = spans.get(name)
        parts.append(_svg(name, keys, generated) if keys else "<p class=\"none\">No key events in the audit file.</p>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _verification(result: VerifyResult | None, audit_file: Path | None, note: str) -> str:
    e = html.escape
    if result is None:
        return f'<p class="verify unknown">Not verified: {e(note)}.</p>'
    where = e(str(audit_file))
    if result.ok:
        extra = "".join(f"<li>{e(n)}</li>" for n in result.notes)
        gaps = "".join(f"<li>seq {a}–{b} recorded as cut (audit.chain_broken)</li>" for a, b in result.gaps)
        tip = f", last seq {result.last.seq}, hash {e(result.last.hash)}" if result.last else ""
        lists = f"<ul>{extra}{gaps}</ul>" if extra or gaps else ""
        return (f'<p class="verify ok">Intact: {result.events} event(s) in {where} verified from '
                f"{'genesis' if result.continues_from is None else 'seq ' + str(result.continues_from)}{tip}. "
                "Cutting the newest lines is detected only with <code>rotator audit verify --anchor</code>.</p>" + lists)
    return (f'<p class="verify bad">BROKEN at {e(str(result.file))} line {result.line}: {e(result.reason)} '
            f"({result.events} event(s) checked out before it).</p>")


def _legend() -> str:
    items = "".join(f'<span class="key"><span class="swatch" style="background:{c}"></span>{label}</span>' for label, c in COLOURS.items())
    return f'<p class="legend">{items}</p>'


def _svg(name: str, keys: list[KeySpan], now: datetime) -> str:
    e = html.escape
    moments = [t for k in keys for t in (k.issued, k.live, k.grace, k.revoked) if t is not None] + [now]
    start, end = min(moments), max(moments)
    span = max((end - start).total_seconds(), 1.0)
    plot = WIDTH - LABEL_W - 10

    def x(at: datetime) -> float:
        return LABEL_W + (at - start).total_seconds() / span * plot

    height = TOP + ROW_H * len(keys) + 8
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
           f'role="img" aria-label="{e(name)}: key timeline">',
           f'<text x="{LABEL_W}" y="14" class="axis">{e(to_rfc3339(start))}</text>',
           f'<text x="{WIDTH - 10}" y="14" class="axis" text-anchor="end">{e(to_rfc3339(end))}</text>']
    for i, key in enumerate(keys):
        y = TOP + i * ROW_H
        out.append(f'<text x="4" y="{y + 14}" class="keyid">{e(_short(key.key_id))}</text>')
        for label, begin, stop in _segments(key, now):
            w = max(x(stop) - x(begin), 2.0)
            out.append(f'<rect x="{x(begin):.1f}" y="{y + 3}" width="{w:.1f}" height="{ROW_H - 8}" fill="{COLOURS[label]}">'
                       f"<title>{e(key.key_id)}: {label} {e(to_rfc3339(begin))} to {e(to_rfc3339(stop))}</title></rect>")
        if key.revoked is not None:
            what = "rolled back" if key.rolled_back else "revoked"
            out.append(f'<rect x="{x(key.revoked) - 1:.1f}" y="{y + 1}" width="4" height="{ROW_H - 4}" fill="{COLOURS["revoked"]}">'
                       f"<title>{e(key.key_id)}: {what} {e(to_rfc3339(key.revoked))}</title></rect>")
    out.append("</svg>")
    return "".join(out)


def _segments(key: KeySpan, now: datetime) -> list[tuple[str, datetime, datetime]]:
    """(state, from, to) for the bars: issued until live, live until grace, grace until revoked."""
    end = key.revoked or now
    marks = [("issued", key.issued), ("live", key.live), ("grace", key.grace)]
    present = [(label, at) for label, at in marks if at is not None and at <= end]
    return [(label, at, present[i + 1][1] if i + 1 < len(present) else end) for i, (label, at) in enumerate(present)]


def _short(key_id: str) -> str:
    return key_id if len(key_id) <= 26 else key_id[:25] + "…"


CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1f2933}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px;border-bottom:1px solid #d9e2ec}
h3{font-size:14px;margin:12px 0 2px;font-family:ui-monospace,monospace}
.meta{color:#52606d}
table.inventory{border-collapse:collapse;font-size:12px;width:100%}
.inventory th,.inventory td{border:1px solid #d9e2ec;padding:3px 6px;text-align:left;vertical-align:top}
.inventory th{background:#f0f4f8}.inventory tr.overdue td{background:#fff5f5}
.verify{padding:8px 12px;border-radius:4px}.verify.ok{background:#ebfbee;border:1px solid #2f9e44}
.verify.bad{background:#fff5f5;border:1px solid #c92a2a;font-weight:600}.verify.unknown{background:#fff9db;border:1px solid #f08c00}
.legend .key{margin-right:16px}.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
svg text{font:11px ui-monospace,monospace;fill:#334e68}svg .axis{fill:#829ab1}
.none{color:#829ab1}
"""
