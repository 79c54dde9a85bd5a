"""Suite-wide rules."""

import os

import hypothesis
import pytest

# In CI the property-based tests (fuzzing, schemathesis) run the same examples
# every time: a red run is reproducible and never a coin toss. Locally they explore.
hypothesis.settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI") == "true":
    hypothesis.settings.load_profile("ci")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failed one: a missing server must never pass silently."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") == "true" and skipped:
        reporter.write_line(f"CI: {skipped} test(s) skipped; in CI that is a failure", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
