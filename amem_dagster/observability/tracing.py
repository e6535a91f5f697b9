"""OpenTelemetry traces: a Kafka event's W3C traceparent becomes the parent (or a link) of the spans that process it.

Batches hold events of many traces, so a batch gets one span: its parent is the events' trace context when they
all share one, otherwise the upstream pipeline span; every distinct event context becomes a link (at most
MAX_LINKS). Between processes the context travels in Dagster run tags (sensor → run → step) and in the
`traceparent` header of `memory.embeddings` messages. With no OTEL_EXPORTER_OTLP_ENDPOINT nothing is configured:
the API's no-op tracer makes spans free, and no links are even collected. OTEL_TRACES_EXPORTER=console prints
spans on stderr instead (or as well), for a look without a collector.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
SERVICE_NAME = "amem-dagster"
TRACEPARENT = "traceparent"
# The SDK keeps 128 links per span by default (OTEL_SPAN_LINK_COUNT_LIMIT); more would only be dropped.
MAX_LINKS = 128
# Run tags: the upstream span of a run (set by the sensor) and the memory_events step's span (for later steps).
RUN_TRACEPARENT_TAG = "amem/traceparent"
EVENTS_TRACEPARENT_TAG = "amem/events_traceparent"

_provider: Any = None
_lock = threading.Lock()
_propagator = TraceContextTextMapPropagator()


def exporters(environ: Mapping[str, str] | None = None) -> list[str]:
    """Which exporters the environment asks for: "otlp" when an OTLP endpoint is set, "console" when
    OTEL_TRACES_EXPORTER names it (local debugging: spans as JSON on stderr); "none" there disables both."""
    env = os.environ if environ is None else environ
    named = {part.strip() for part in (env.get("OTEL_TRACES_EXPORTER") or "").split(",") if part.strip()}
    if "none" in named:
        return []
    wanted = ["otlp"] if any(env.get(name) for name in ENDPOINT_VARIABLES) else []
    return wanted + (["console"] if "console" in named else [])


def configure(environ: Mapping[str, str] | None = None) -> bool:
    """Install an SDK tracer provider with the exporters the environment asks for; once per process."""
    global _provider
    env = os.environ if environ is None else environ
    with _lock:
        if _provider is not None:
            return True
        chosen = exporters(env)
        if not chosen:
            return False
        import sys

        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        provider = TracerProvider(resource=Resource.create(
            {"service.name": env.get("OTEL_SERVICE_NAME") or SERVICE_NAME}))
        if "otlp" in chosen:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        if "console" in chosen:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        # Kept here rather than as the global provider: only this project's spans are exported, and tests can
        # swap providers (the global one can be set once per process). The SDK flushes it at exit.
        _provider = provider
    return True


def use_provider(provider: Any) -> None:
    """Use this SDK provider (tests: one with an InMemorySpanExporter); None returns to the unconfigured state."""
    global _provider
    with _lock:
        _provider = provider


def recording() -> bool:
    """Whether spans are recorded here; when not, callers skip collecting contexts for links."""
    return _provider is not None


def tracer() -> trace.Tracer:
    return (_provider or trace.get_tracer_provider()).get_tracer("amem_dagster")


def flush(timeout_millis: int = 5000) -> None:
    """Export what is buffered (end of a step: a run process may exit before the batch timer fires)."""
    if _provider is not None and hasattr(_provider, "force_flush"):
        _provider.force_flush(timeout_millis)


def context_from_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> SpanContext | None:
    """The span context of the first valid W3C traceparent header (with its tracestate), or None."""
    if not headers:
        return None
    state = next((raw for name, raw in headers if name.lower() == "tracestate" and raw), None)
    for name, raw in headers:
        if name.lower() != TRACEPARENT or not raw:
            continue
        carrier = {TRACEPARENT: raw.decode("ascii", errors="replace")}
        if state:
            carrier["tracestate"] = state.decode("ascii", errors="replace")
        found = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
        if found.is_valid:
            return found
    return None


def parse_traceparent(value: str | None) -> SpanContext | None:
    """The span context in a traceparent string (e.g. a run tag), or None."""
    if not value:
        return None
    found = trace.get_current_span(_propagator.extract({TRACEPARENT: value})).get_span_context()
    return found if found.is_valid else None


def traceparent(span: Span | None = None) -> str | None:
    """The W3C traceparent of `span` (default: the current span), or None when it has no valid context."""
    carrier: dict[str, str] = {}
    span = span or trace.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    _propagator.inject(carrier, context=set_span_in_context(span))
    return carrier.get(TRACEPARENT)


def traceparent_headers(span: Span | None = None) -> list[tuple[str, bytes]] | None:
    """Kafka headers carrying the current span's context onward, or None (no header at all) without one."""
    value = traceparent(span)
    return [(TRACEPARENT, value.encode())] if value else None


def distinct(contexts: Iterable[SpanContext | None]) -> list[SpanContext]:
    """Distinct valid contexts in first-seen order."""
    seen: dict[tuple[int, int], SpanContext] = {}
    for found in contexts:
        if found is not None and found.is_valid:
            seen.setdefault((found.trace_id, found.span_id), found)
    return list(seen.values())


@contextmanager
def batch_span(name: str, contexts: Iterable[SpanContext | None] = (), *, upstream: SpanContext | None = None,
               attributes: Mapping[str, Any] | None = None, start_time: int | None = None,
               enabled: bool = True) -> Iterator[Span]:
    """A span for a batch of events: child of their one trace context if they share it, else of `upstream`
    (or a root), linked to every distinct event context (up to MAX_LINKS) and to `upstream` when not its parent.
    With enabled=False (e.g. an idle sensor tick) no span is started and the yielded span ignores everything."""
    if not enabled:
        yield trace.INVALID_SPAN
        return
    events = distinct(contexts)
    if len(events) == 1:
        parent, links = events[0], ([upstream] if upstream is not None and upstream.is_valid else [])
    else:
        parent, links = (upstream if upstream is not None and upstream.is_valid else None), events[:MAX_LINKS]
    # An explicit empty context: a batch span never nests under whatever span happens to be current.
    context = set_span_in_context(NonRecordingSpan(parent)) if parent is not None else Context()
    attrs = {"amem.traced_events": len(events), **(attributes or {})}
    with tracer().start_as_current_span(name, context=context, links=[Link(c) for c in links], attributes=attrs,
                                        start_time=start_time) as span:
        yield span


def record_span(name: str, start_time: int, end_time: int, attributes: Mapping[str, Any] | None = None) -> None:
    """A child of the current span for work already done between two time.time_ns() readings (e.g. a read)."""
    span = tracer().start_span(name, start_time=start_time, attributes=dict(attributes or {}))
    span.end(end_time=end_time)
