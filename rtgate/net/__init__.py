"""The data plane's I/O: the front accept loop, the sans-IO WebSocket driver, upstream dialing."""
