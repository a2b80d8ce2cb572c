"""Root of the test tree. ``tests`` is a package so test modules can ``import tests.support...``; this
conftest makes pytest put the repository root on sys.path for that, also when run as plain ``pytest``."""
