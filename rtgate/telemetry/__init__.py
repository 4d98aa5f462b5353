"""Event logging: the relay's tap seam, sampling and redaction (pure), the writer task and sinks."""
