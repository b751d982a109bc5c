"""Load and soak runs: the reference app on real uvicorn, a real DevIssuer, 127.0.0.1 only.

:mod:`tests.load.soak` is the driver, a package with one module per job
(``python -m tests.load.soak``);
:mod:`tests.load.test_soak` runs its short profile under pytest.
"""
