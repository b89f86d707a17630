"""Settings shared by every test directory: hypothesis profiles.

`ci` (the default) is deterministic: the same examples on every run and machine, no example
database written into the work tree, no per-example deadline (a loaded 2-core CI machine would
trip it). `explore` draws new examples each run, more of them, for hunting bugs locally:

    pytest tests/unit --hypothesis-profile=explore
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", max_examples=2000, deadline=None)
settings.load_profile("ci")
