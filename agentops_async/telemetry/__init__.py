"""From record() to the wire: export queue, batching, OpenTelemetry span capture (private)."""
