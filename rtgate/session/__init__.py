"""The data plane: a session from handshake to record (auth, admission, pool walk, dial, relay, warm pools, health checks, hot-path counters)."""
