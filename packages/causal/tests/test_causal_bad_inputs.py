"""Bad-input summary (CONTRIBUTING.md, "Bad input") over the public entry points of
invariance-causal: every derived bad call (NaN/inf, empty, wrong dims or dtype, negative or
non-numeric hyper-parameters, unknown strings) must raise ValueError/TypeError naming the
argument; ``accept`` lists the mutations that are valid input (then a finite output counts as
handled). The entry points and their valid calls are the ``ENTRY_POINTS`` that the methods' own
test files declare (``test_pac_invariance.py``, ``test_causal_de_finetti.py``,
``test_ci_tests.py``, ``test_medl.py``), where each is also tested on its own;
``test_bad_input_summary`` prints the tried/handled table shown in the README."""

from pathlib import Path

from invariance.core.testing import bad_input_summary


def test_bad_input_summary():
    bad_input_summary(Path(__file__).parent)
