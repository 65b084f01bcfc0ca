"""Every test runs with the memory oracles subscribed, as `mmrace` does."""

import mmrace.oracles  # noqa: F401
