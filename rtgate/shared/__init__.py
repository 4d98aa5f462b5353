"""State shared by every rtgate process: leases per limit and deployment health.

Two stores keep the same model with the same rules (:mod:`rtgate.pool.quota`):
:mod:`rtgate.shared.sqlite_store`, a SQLite file in the supervisor's runtime
directory for the workers of one host, and :mod:`rtgate.shared.redis_store`,
Redis or Valkey for many hosts. Both are synchronous and atomic per call (a
``BEGIN IMMEDIATE`` transaction, a Lua script); the data plane calls them from
a worker thread at session setup, renewal and end, never per frame.
"""
