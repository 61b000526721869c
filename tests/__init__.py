"""The test suite: a package, so that `tests.helpers` imports by name under
--import-mode=importlib."""
