"""Bad-input summary (CONTRIBUTING.md, "Bad input") over the public entry points of
invariance-optim: every derived bad call (NaN/inf, empty, wrong dims or dtype, negative or
non-numeric hyper-parameters, unknown strings) must raise ValueError/TypeError naming the
argument. The entry points and their valid calls are the ``ENTRY_POINTS`` that the methods' own
test files declare (``test_adamp.py``, ``test_zloss.py``, ``test_mip.py``), where each is also
tested on its own; ``test_bad_input_summary`` prints the tried/handled table shown in the README."""

from pathlib import Path

from invariance.core.testing import bad_input_summary


def test_bad_input_summary():
    bad_input_summary(Path(__file__).parent)
