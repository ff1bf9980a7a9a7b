"""The e2e tests run the same real stack as the integration tests: re-export its fixtures
(and the hook that attaches the stack's logs to a failing test's report)."""

from tests.integration.conftest import (  # noqa: F401
    _module_stack,
    pytest_runtest_makereport,
    stack,
    start_stack,
)
