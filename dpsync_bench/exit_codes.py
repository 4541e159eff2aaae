"""Exit codes of every entry point (no imports: read by code that must start fast)."""

EXIT_USAGE = 2  # bad input, one line on stderr
# A rank's own fail(): one line on stderr, then out. Not 1-5: pytest uses those (3 is its
# INTERNALERROR), and a rank's code must tell our fail-fast from pytest's own failures.
EXIT_FAILED = 13
