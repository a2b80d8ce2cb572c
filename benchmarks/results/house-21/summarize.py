"""The table of house-21.md from the run's JSON files: python summarize.py FOLDER."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def load(folder: Path, side: str) -> dict[int, dict]:
    return {int(p.stem.rsplit("-", 1)[1]): json.loads(p.read_text()) for p in folder.glob(f"{side}-*.json")}


def main(folder: Path) -> None:
    before, after = load(folder, "before"), load(folder, "after")
    print("| pass | before (b) frames/s (rounds) | after (b) frames/s (rounds) | after/before | b/a before, after "
          "| realtime 2x30 fps: classified frames/s, p50 ms, before | after |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for n in sorted(before):
        b, a = before[n], after[n]
        rb, ra = b["realtime"][0], a["realtime"][0]
        ratios.append(a["pipeline_fps"] / b["pipeline_fps"])
        rounds_b = ", ".join(f"{r['pipeline_fps']:.1f}" for r in b["rounds"])
        rounds_a = ", ".join(f"{r['pipeline_fps']:.1f}" for r in a["rounds"])
        print(f"| {n} | {b['pipeline_fps']:.1f} ({rounds_b}) | {a['pipeline_fps']:.1f} ({rounds_a}) | {ratios[-1]:.3f} "
              f"| {b['b_over_a']:.2f}, {a['b_over_a']:.2f} | {rb['fps']:.1f}, {rb['p50_ms']:.0f} "
              f"| {ra['fps']:.1f}, {ra['p50_ms']:.0f} |")
    fb = [d["pipeline_fps"] for d in before.values()]
    fa = [d["pipeline_fps"] for d in after.values()]
    print(f"\nmedian (b): before {statistics.median(fb):.1f}, after {statistics.median(fa):.1f} frames/s "
          f"({(statistics.median(fa) / statistics.median(fb) - 1) * 100:+.1f}%); per-pair ratio median "
          f"{statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}")
    for side, runs in (("before", before), ("after", after)):
        print(f"{side}: (a) model only median {statistics.median(d['model_fps'] for d in runs.values()):.1f}, "
              f"(d) decode only median {statistics.median(d['decode_fps'] for d in runs.values()):.0f}, "
              f"realtime median {statistics.median(d['realtime'][0]['fps'] for d in runs.values()):.1f} frames/s, "
              f"p50 {statistics.median(d['realtime'][0]['p50_ms'] for d in runs.values()):.0f} ms")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
