"""`molbridge trace <trace_id>`: one trace from the local JSON-lines span files, as an indented tree."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from services.runtime.settings import REPO_ROOT
from services.runtime.telemetry import SpanRecord, read_span_records, traces_dir


def default_data_dir() -> Path:
    return Path(os.environ.get("MOLBRIDGE_DATA_DIR") or REPO_ROOT / ".data")


def load_trace(directory: Path, trace_id: str) -> list[SpanRecord]:
    """The spans of `trace_id` found in any file under `directory`, oldest first (a span written twice,
    by a service and by the receiver, counts once)."""
    wanted = trace_id.strip().lower()
    spans: dict[str, SpanRecord] = {}
    for record in read_span_records(directory):
        if record.trace_id == wanted:
            spans.setdefault(record.span_id, record)
    return sorted(spans.values(), key=lambda s: (s.start_unix_nano, -s.end_unix_nano))


def render_trace(spans: Sequence[SpanRecord]) -> str:
    """A header, then one line per span: offset from the trace start, duration, service and name,
    indented under its parent. Spans whose parent was not recorded start their own branch."""
    if not spans:
        return ""
    ordered = sorted(spans, key=lambda s: (s.start_unix_nano, -s.end_unix_nano))
    known = {s.span_id for s in ordered}
    children: dict[str | None, list[SpanRecord]] = defaultdict(list)
    for span in ordered:
        children[span.parent_span_id if span.parent_span_id in known else None].append(span)

    start = ordered[0].start_unix_nano
    total_ms = (max(s.end_unix_nano for s in ordered) - start) / 1e6
    services = sorted({s.service for s in ordered})
    width = max(len("service"), *(len(s) for s in services))
    lines = [
        f"trace {ordered[0].trace_id}: {len(ordered)} spans, {total_ms:.2f} ms, services: {', '.join(services)}",
        f"{'start ms':>10}  {'duration ms':>11}  {'service':<{width}}  span",
    ]

    def walk(parent: str | None, prefix: str, seen: set[str]) -> None:
        siblings = children.get(parent, [])
        for index, span in enumerate(siblings):
            if span.span_id in seen:
                continue
            seen.add(span.span_id)
            last = index == len(siblings) - 1
            branch = "" if parent is None else ("└─ " if last else "├─ ")
            flag = "  [ERROR]" if span.status == "ERROR" else ""
            lines.append(
                f"{(span.start_unix_nano - start) / 1e6:>10.2f}  {span.duration_ms:>11.2f}  "
                f"{span.service:<{width}}  {prefix}{branch}{span.name}{flag}"
            )
            below = "" if parent is None else prefix + ("   " if last else "│  ")
            walk(span.span_id, below, seen)

    walk(None, "", set())
    return "\n".join(lines)


def show_trace(trace_id: str, data_dir: Path) -> str | None:
    """The rendered trace, or None when no span of it is recorded under the data dir."""
    spans = load_trace(traces_dir(data_dir), trace_id)
    return render_trace(spans) if spans else None
