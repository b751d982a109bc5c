"""Hypothesis profiles for the fuzz suite: ``ci`` (default) and ``long``.

``ci`` is bounded (the counts are set per test, a few thousand examples in
all) so the whole suite stays around a minute on a 2-core runner; ``long``
(``JWTEDGE_FUZZ=long``) runs 100k examples per test for soak runs. Both print
the reproduction blob of a failure (``@reproduce_failure``).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from . import LONG_EXAMPLES, PROFILE

settings.register_profile(
    "ci",
    # Per-test counts come from ``examples()``; this only covers tests without one.
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
    print_blob=True,
)
settings.register_profile(
    "long",
    max_examples=LONG_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
    print_blob=True,
)
settings.load_profile(PROFILE)
