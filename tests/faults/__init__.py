"""Reliability tests: a real loopback server that misbehaves on purpose.

:mod:`tests.faults.servers` holds the fault-injecting server; the fault
matrix (bake, remote keys, refresh) and the key-staleness chain run against
it. docs/reliability.md has the matrix as a table and the commands.
"""
