"""Strict mode: on CI a real-component test that skips fails, a GPU test that skips does not."""

from __future__ import annotations

import pytest

MODULE = """
import pytest

@pytest.mark.gpu
def test_needs_cuda():
    pytest.skip("needs CUDA")

@pytest.mark.cpu_only
@pytest.mark.skipif(True, reason="CUDA is available here")
def test_without_cuda():
    pass

@pytest.mark.skipif(True, reason="the prometheus binary is not installed")
def test_prometheus():
    pass

def test_rtsp():
    pytest.skip("rtsp-server-perl is not installed")

@pytest.mark.xfail(reason="known", run=False)
def test_expected_failure():
    pass

def test_passes():
    assert True
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_components=MODULE)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\nmarkers =\n    gpu: needs CUDA\n")
    return pytester


def run(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, **env: str) -> pytest.RunResult:
    for name in ("SIGHTLINE_STRICT", "CI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return suite.runpytest_inprocess("-p", "tests.support.strict_skips", "-rs", "-p", "no:cacheprovider")


def test_skips_are_allowed_outside_ci(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(suite, monkeypatch)
    result.assert_outcomes(passed=1, skipped=4, xfailed=1)


@pytest.mark.parametrize("env", [{"SIGHTLINE_STRICT": "1"}, {"CI": "true"}])
def test_strict_mode_fails_component_skips_only(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                env: dict[str, str]) -> None:
    result = run(suite, monkeypatch, **env)
    # a skip from a skipif mark happens at setup, so it fails as an error; pytest.skip() in the body as a failure
    result.assert_outcomes(passed=1, skipped=2, failed=1, errors=1, xfailed=1)
    failed = {r.nodeid.split("::")[-1] for r in result.reprec.getreports("pytest_runtest_logreport") if r.failed}
    assert failed == {"test_prometheus", "test_rtsp"}
    result.stdout.fnmatch_lines(["*test_prometheus was skipped (the prometheus binary is not installed)*strict*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_strict_mode_fails_a_module_skipped_at_collection(pytester: pytest.Pytester,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_chromium='import pytest\npytest.skip("no chromium", allow_module_level=True)\n')
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = run(pytester, monkeypatch, SIGHTLINE_STRICT="1")
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*test_chromium.py was skipped (no chromium)*"])


def test_ci_installs_every_package_the_real_component_tests_name() -> None:
    """Strict mode turns a missing package into a failure, so .ci/run must install what the tests ask for."""
    from pathlib import Path

    from tests.support import gst_rtsp

    script = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    install = script[script.index("apt-get install"):].split("\n#", 1)[0]
    packages = set(install.replace("\\\n", " ").split())
    needed = set(gst_rtsp.PACKAGES.split()) | {"ffmpeg", "rtsp-server-perl", "prometheus", "chromium",
                                               "chromium-driver", "mosquitto", "docker-compose", "iproute2",
                                               "util-linux", "curl"}  # MQTT broker, compose validation, netns
    # (Ray, the docs' examples), the docs' curl examples (tests/test_docs_examples.py)
    assert needed <= packages, sorted(needed - packages)
    assert "export SIGHTLINE_STRICT=1" in script
    assert script.rstrip().endswith(".venv/bin/python -m pytest -q")  # the README's test command, unchanged
