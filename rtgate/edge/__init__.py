"""The process edge: server start-up, the front accept loop, the worker supervisor, systemd notification and logging."""
