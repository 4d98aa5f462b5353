"""The deployment pool, pure: weighted selection, health state and ejections, warm-pool policy. No I/O, time enters as ``now``."""
