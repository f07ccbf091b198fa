"""BaluPi's reliability scenarios (issue 17). Each module here that defines `SCENARIOS` (callables
taking `long: bool` and returning a dict of figures) is run by `python -m bench.reliability`; the
tests in tests/reliability/ run the short forms and assert on the figures."""
