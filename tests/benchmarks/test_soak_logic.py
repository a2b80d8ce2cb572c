"""benchmarks/soak.py's pass/fail rules, on synthetic samples (the soak itself runs for minutes, not in CI)."""

from __future__ import annotations

import os

import pytest

from tests.support.scripts import benchmark_script


@pytest.fixture(scope="module")
def soak():
    with benchmark_script("soak") as module:
        yield module


def series(soak, minutes: int, rss_mb, threads: int = 40, fds: int = 30, every_s: float = 5.0):
    """Samples every ``every_s`` for ``minutes``; ``rss_mb(t_s)`` gives the RSS in MiB."""
    n = int(minutes * 60 / every_s)
    return [soak.Sample(i * every_s, int(rss_mb(i * every_s) * 2**20), threads, fds, 80.0, 5.0) for i in range(n + 1)]


def test_flat_memory_and_returning_threads_pass(soak) -> None:
    samples = series(soak, 10, lambda t: 300 + (t % 60) / 30)  # +-2 MiB of noise
    base = soak.Quiet(40, 30, 300 * 2**20)
    assert soak.judge(samples, 180, base, soak.Quiet(41, 33, 301 * 2**20)) == []


def test_rss_growing_more_than_five_percent_after_warm_up_fails(soak) -> None:
    samples = series(soak, 10, lambda t: 300 + 4 * t / 60)  # 4 MiB a minute: ~9% from minute 3 to 10
    base = soak.Quiet(40, 30, 300 * 2**20)
    problems = soak.judge(samples, 180, base, base)
    assert len(problems) == 1 and problems[0].startswith("RSS grew")


def test_growth_during_warm_up_does_not_count(soak) -> None:
    samples = series(soak, 10, lambda t: min(300 + t, 480))  # grows for 3 minutes, then flat
    base = soak.Quiet(40, 30, 480 * 2**20)
    assert soak.judge(samples, 240, base, base) == []


def test_threads_or_fds_that_stay_up_fail(soak) -> None:
    samples = series(soak, 6, lambda t: 300)
    base = soak.Quiet(40, 30, 300 * 2**20)
    problems = soak.judge(samples, 120, base, soak.Quiet(50, 60, 300 * 2**20))
    assert [p.split(":")[0] for p in problems] == ["threads did not return to baseline",
                                                   "open fds did not return to baseline"]


def test_a_run_without_a_minute_after_warm_up_cannot_pass(soak) -> None:
    samples = series(soak, 3, lambda t: 300)
    base = soak.Quiet(40, 30, 300 * 2**20)
    assert soak.judge(samples, 150, base, base)[0].startswith("too short")


def test_minute_rows_summarise_each_minute(soak) -> None:
    samples = series(soak, 2, lambda t: 100 if t < 60 else 200)
    rows = soak.minute_rows(samples)
    assert [r["minute"] for r in rows] == [1, 2, 3]
    assert rows[0]["rss_mb"] == 100 and rows[1]["rss_mb"] == 200
    assert rows[0]["p99_ms"] == 80.0 and rows[0]["threads"] == 40


def test_process_usage_reads_this_process(soak) -> None:
    rss, threads, fds = soak.process_usage(os.getpid())
    assert rss > 10 * 2**20 and threads >= 1 and fds >= 3


def test_the_command_line_refuses_a_run_too_short_to_judge(soak) -> None:
    with pytest.raises(SystemExit):
        soak.parse_args(["--minutes", "1", "--warmup-minutes", "0.5"])
    args = soak.parse_args(["--minutes", "2"])
    assert args.warmup_minutes == 0.5 and args.streams == 4


def test_service_environment_pairs(soak) -> None:
    args = soak.parse_args(["--minutes", "5", "--service-env", "MALLOC_ARENA_MAX=2", "--service-env", "A=b=c"])
    assert args.service_env == [("MALLOC_ARENA_MAX", "2"), ("A", "b=c")]
    with pytest.raises(SystemExit):
        soak.parse_args(["--minutes", "5", "--service-env", "novalue"])
