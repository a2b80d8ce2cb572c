"""LineLog (issue 25): whole lines or nothing, rotated by size and by age into files named by their start,
failures reported per kind and written through once the disk has room again."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest
from sightline.stream.storage.layout import free_stamped_path, parse_stamped, stamped_files
from sightline.stream.storage.line_log import LineLog, create_exclusive
from sightline.stream.storage.stats import StorageStats

T0 = 1_796_000_000.0  # 2026-11-30T00:53:20Z


class Clock:
    """Both clocks a LineLog reads, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return T0 + self.now


def rotating_log(folder: Path, clock: Clock, storage: StorageStats, **kwargs) -> LineLog:
    return LineLog("predictions", lambda wall: free_stamped_path(folder, "cam", wall, ".jsonl"), storage=storage,
                   flush_s=0.0, clock=clock.monotonic, wall=clock.wall, **kwargs)


def line(i: int) -> bytes:
    return f'{{"seq": {i:04d}, "pad": "{"x" * 30}"}}\n'.encode()  # 55 bytes


def test_a_log_rotates_by_size_into_names_that_carry_the_stream_and_never_collide(tmp_path: Path) -> None:
    clock, storage = Clock(), StorageStats()
    log = rotating_log(tmp_path, clock, storage, max_bytes=120)
    for i in range(9):  # two lines a file: five files, all begun within the same second
        log.append(line(i))
        clock.now += 0.1
    log.close()
    files = stamped_files(tmp_path, "cam", ".jsonl")
    assert [p.name for p in files] == ["cam.20261130T005320Z.jsonl"] + [f"cam.20261130T005320Z-{n}.jsonl"
                                                                        for n in range(2, 6)]
    assert all(p.stat().st_size <= 120 for p in files)
    assert b"".join(p.read_bytes() for p in files) == b"".join(line(i) for i in range(9))  # every line, in order
    assert [parse_stamped(p.name)[0] for p in files] == ["cam"] * 5
    assert not any(storage.is_open(p) for p in files)


def test_a_log_rotates_by_age_and_each_file_is_named_by_its_first_line(tmp_path: Path) -> None:
    clock, storage = Clock(), StorageStats()
    log = rotating_log(tmp_path, clock, storage, max_s=3600)
    log.append(line(0))
    first = log.path
    assert first is not None and storage.is_open(first)  # retention leaves the file being written alone
    clock.now = 3599.0
    log.append(line(1))
    assert log.path == first
    clock.now = 3600.0 + 5400  # an hour and a half later (no sleeping: the clocks are the test's)
    log.append(line(2))
    second = log.path
    assert second is not None and second != first and not storage.is_open(first) and storage.is_open(second)
    log.close()
    files = stamped_files(tmp_path, "cam", ".jsonl")
    assert files == [first, second]
    assert [parse_stamped(p.name)[1] for p in files] == [int(T0), int(T0 + 9000)]
    assert files[0].read_bytes() == line(0) + line(1) and files[1].read_bytes() == line(2)


def test_a_quiet_log_still_goes_out_once_a_second_and_opens_no_file_before_its_first_line(tmp_path: Path) -> None:
    clock = Clock()
    log = LineLog("predictions", lambda wall: free_stamped_path(tmp_path, "cam", wall, ".jsonl"),
                  clock=clock.monotonic, wall=clock.wall)
    log.tick()
    assert log.path is None and not list(tmp_path.iterdir())
    log.append(line(0))  # buffered: the last flush was less than a second ago
    assert log.path is None
    clock.now = 1.0
    log.tick()  # a frame without a new line
    assert log.path is not None and log.path.read_bytes() == line(0)
    log.close()


class FullDisk(io.FileIO):
    """A real file on a disk with ``room`` bytes left (shared by every file: one volume): a write that does not
    fit writes what fits and fails with ENOSPC, as the kernel's short write then the next call do."""

    room = 0

    def write(self, data) -> int:  # type: ignore[override]
        data = bytes(data)
        if len(data) <= FullDisk.room:
            FullDisk.room -= len(data)
            return super().write(data)
        if FullDisk.room > 0:
            written = super().write(data[: FullDisk.room])
            FullDisk.room = 0
            return written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_loses_whole_lines_counted_and_reported_then_writing_resumes_by_itself(tmp_path: Path) -> None:
    clock, storage, lost = Clock(), StorageStats(), []
    FullDisk.room = 80  # one line and half of the next
    log = rotating_log(tmp_path, clock, storage, max_bytes=200, on_lost=lost.append,
                       opener=lambda path: FullDisk(path, "x"))
    log.append(line(0))
    with pytest.raises(OSError, match="1 line\\(s\\) not written: No space left"):
        log.append(line(1))  # 25 bytes of it reached the file: cut off again
    with pytest.raises(OSError):
        log.append(line(2))
    figures = storage.kinds["predictions"]
    assert figures.failing == "No space left on device" and figures.write_errors == 2
    FullDisk.room = 10**6  # space freed: nobody restarts anything
    for i in range(3, 9):
        log.append(line(i))
    log.close()
    assert figures.failing is None and figures.write_errors == 2 and sum(lost) == log.lost_lines == 2
    files = stamped_files(tmp_path, "cam", ".jsonl")
    text = b"".join(p.read_bytes() for p in files)
    assert text == b"".join(line(i) for i in (0, *range(3, 9)))  # whole lines only, none torn, in order
    assert len(files) > 1  # rotation went on after the failure


def test_a_file_that_cannot_be_created_loses_its_lines_counted_and_the_next_flush_tries_again(
        tmp_path: Path) -> None:
    clock, storage = Clock(), StorageStats()
    fail = [True]

    def opener(path: Path):
        if fail[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return create_exclusive(path)

    log = rotating_log(tmp_path, clock, storage, opener=opener)
    with pytest.raises(OSError, match="predictions: 1 line"):
        log.append(line(0))
    assert log.path is None and storage.kinds["predictions"].failing is not None
    fail[0] = False
    log.append(line(1))
    log.close()
    assert [p.read_bytes() for p in stamped_files(tmp_path, "cam", ".jsonl")] == [line(1)]
    assert log.lost_lines == 1 and storage.kinds["predictions"].failing is None


def test_nothing_is_overwritten_a_taken_name_gets_the_next_suffix(tmp_path: Path) -> None:
    clock = Clock()
    taken = tmp_path / "cam.20261130T005320Z.jsonl"
    taken.write_bytes(b"someone else's\n")
    log = rotating_log(tmp_path, clock, StorageStats())
    log.append(line(0))
    log.close()
    assert taken.read_bytes() == b"someone else's\n"
    assert (tmp_path / "cam.20261130T005320Z-2.jsonl").read_bytes() == line(0)
