"""Governance: who may change production, and the record of every change.

Identities and roles (personal tokens, an authenticating proxy in front, the deprecated single
tokens) and the tamper-evident audit trail: one append-only, hash-chained record per state
change, kept in one SQL database (a SQLite file by default, PostgreSQL for teams). A layer just
above ``core``: promotion, serving, the monitor and the CLI all record into it and check it.
"""
