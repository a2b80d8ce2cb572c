"""How long a retention pass takes over N files (issue 25: 100,000 files in under 10 s).

Makes ``output_dir`` as 24/7 cameras leave it: one-minute segments of ``--streams`` streams spread over
``--days`` days in recordings/<stream>/<day>/, and as many prediction logs, event clips and rotated event-history
files as the ratios below say; then runs ``scan`` alone and a full pass that deletes what is older than 7 days
(``--old-share`` of the files). Files are empty: the pass reads names and ``stat``s, never contents. Put the tree on
tmpfs (``--dir /dev/shm/...``) to measure the code, on the disk of the service to measure the disk.

    python benchmarks/retention_pass.py --files 100000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from common import cpu_name  # benchmarks/ is on sys.path when this script runs
from sightline.stream.config import RetentionConfig
from sightline.stream.storage.layout import segment_folder, stamped_name
from sightline.stream.storage.retention import DAY_S, Retention, scan
from sightline.stream.storage.stats import StorageStats

SHARES = {"recordings": 0.85, "predictions": 0.05, "events": 0.09, "event_history": 0.01}  # of the files


def make_tree(root: Path, files: int, now: float, streams: int = 20, days: float = 10.0,
              old_share: float = 0.1) -> int:
    """``files`` empty files under ``root`` by kind; ``old_share`` of them last written more than 7 days before
    ``now``, the rest within it. Returns how many are old."""
    counts = {kind: round(files * share) for kind, share in SHARES.items()}
    counts["recordings"] += files - sum(counts.values())
    old = 0
    for kind, n in counts.items():
        for i in range(n):
            is_old = i < n * old_share
            age = (7 * DAY_S + 60 + (days - 7) * DAY_S * i / n) if is_old else 6.9 * DAY_S * i / n
            wall = now - age
            stream = f"cam-{i % streams}"
            if kind == "recordings":
                path = segment_folder(root, stream, wall) / stamped_name(stream, wall, ".mp4", i // streams + 1)
            elif kind == "predictions":
                path = root / "predictions" / stream / stamped_name(stream, wall, ".jsonl", i + 1)
            elif kind == "events":
                path = root / "events" / f"{stamped_name('ev', wall, '', i + 1)}.{'mp4' if i % 2 else 'jpg'}"
            else:
                path = root / "event_history" / stamped_name("events", wall, ".jsonl", i + 1)
            try:
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)
            os.utime(path, (wall, wall))
            old += is_old
    return old


def measure(root: Path, now: float) -> dict[str, float]:
    """Scan alone, then a full pass (scan + deletions) with the default ages (recordings and logs 7 days)."""
    started = time.perf_counter()
    found = scan(str(root))
    scan_s = time.perf_counter() - started
    stats = StorageStats(clock=lambda: now)
    retention = Retention(root, RetentionConfig(min_free_gb=0), stats, clock=lambda: now)
    started = time.perf_counter()
    retention.run_pass()
    pass_s = time.perf_counter() - started
    scanned = sum(len(files) for files in found.values())
    return {"files": scanned, "scan_s": round(scan_s, 3), "scan_files_per_s": round(scanned / scan_s),
            "pass_s": round(pass_s, 3), "deleted": stats.last_pass.deleted_files,
            "delete_s": round(max(0.0, pass_s - scan_s), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--old-share", type=float, default=0.1, help="share of files older than 7 days (deleted)")
    parser.add_argument("--dir", type=Path, default=None, help="where to make the tree (default: a temp folder)")
    args = parser.parse_args()
    now = time.time()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        old = make_tree(root, args.files, now, args.streams, old_share=args.old_share)
        made_s = time.perf_counter() - started
        figures = measure(root, now)
    print(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(),
                      "filesystem_dir": str(args.dir or tempfile.gettempdir()),
                      "made_s": round(made_s, 1), "old": old, **figures}))


if __name__ == "__main__":
    main()
