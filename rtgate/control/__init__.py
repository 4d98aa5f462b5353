"""The control plane: the ASGI app for health, admin and metrics, and the Prometheus rendering of the data plane's counters."""
