"""Benchmark session hooks: print kstrade's figures next to its anchors when the run ends."""

import pytest

from figures import print_summary


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    print_summary(terminalreporter)
