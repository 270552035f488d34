"""Worked examples of every extension point, each one file (``docs/extending.md``); run by
``tests/test_extending.py`` through its config in ``configs/examples/``."""
