"""End-to-end tests: real uvicorn servers on 127.0.0.1, real HTTP between them.

The servers they share (any ASGI app on uvicorn, a served DevIssuer, the
reference app's config) are in :mod:`tests.e2e.servers`.
"""
