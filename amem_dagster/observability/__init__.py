"""Observability of the pipeline: Prometheus metrics, OpenTelemetry traces and JSON-line logs.

Each module is small and cheap to import; nothing leaves the process unless it is configured
(AMEM_PUSHGATEWAY_URL for metrics, OTEL_EXPORTER_OTLP_ENDPOINT for traces).
"""
