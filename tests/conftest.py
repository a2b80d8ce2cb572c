"""Root of the test tree. ``tests`` is a package so test modules can ``import tests.support...``; this
conftest makes pytest put the repository root on sys.path for that, also when run as plain ``pytest``.
It also loads strict mode (a skip outside the ``gpu``/``cpu_only`` markers fails under CI), pytester, the
session's wheel (tests/support/wheel.py) and the main thread's signal stack guard (tests/support/altstack.py)."""

pytest_plugins = ("pytester", "tests.support.strict_skips", "tests.support.wheel", "tests.support.altstack")
