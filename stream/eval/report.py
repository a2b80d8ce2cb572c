"""Score a replay against its labels and write the results: report.json, report.md, predictions.jsonl.

The numbers come from stream.eval.scoring (pure functions); this module only lines the per-frame
arrays up with the ground truth, aggregates per video and overall, and formats.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sightline.stream.eval import scoring
from sightline.stream.eval.labels import VideoJob
from sightline.stream.eval.replay import Replay, VideoRun

OTHER = "(other)"


@dataclass(frozen=True)
class Setup:
    """What was evaluated, how: everything the report states besides the numbers."""

    model: str
    model_info: dict[str, object]
    class_names: list[str]
    eval_classes: list[str]
    background: str | None
    labels: str
    settings: dict[str, object]


@dataclass
class ScoredVideo:
    """One video's frames lined up with the truth, in evaluation columns (see scoring)."""

    run: VideoRun
    truth: np.ndarray
    truth_model: np.ndarray
    raw: np.ndarray
    smoothed: np.ndarray
    timeline: str | None = None


def evaluation_classes(jobs: Sequence[VideoJob], background: str | None) -> list[str]:
    """The classes scored: every label in labels.csv (sorted), then the background class if it is a new one."""
    labels = sorted({seg.label for job in jobs for seg in job.segments})
    if background is not None and background not in labels:
        labels.append(background)
    return labels


def score_video(run: VideoRun, setup: Setup) -> ScoredVideo:
    cols = scoring.column_map(setup.class_names, setup.eval_classes)
    where = {name: i for i, name in enumerate(setup.eval_classes)}
    segs = run.job.segments
    background = where[setup.background] if setup.background is not None else scoring.IGNORED
    frames = run.frames
    truth = scoring.truth_at(frames.time_s, [s.start_s for s in segs], [s.end_s for s in segs],
                             [where[s.label] for s in segs], background)
    model_of_col = np.array([setup.class_names.index(c) for c in setup.eval_classes], dtype=np.int64)
    truth_model = np.where(truth >= 0, model_of_col[np.clip(truth, 0, None)], scoring.IGNORED)
    return ScoredVideo(run, truth, truth_model, scoring.to_columns(frames.raw, cols),
                       scoring.to_columns(frames.smoothed, cols))


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem).strip("_") or "video"


def timeline_names(videos: Sequence[ScoredVideo]) -> list[str]:
    """A distinct PNG file name per video."""
    names: list[str] = []
    for video in videos:
        base = f"timeline_{_slug(video.run.job.name)}"
        name, n = f"{base}.png", 2
        while name in names:
            name, n = f"{base}_{n}.png", n + 1
        names.append(name)
    return names


def _cat(arrays: Sequence[np.ndarray], dtype: type, width: int | None = None) -> np.ndarray:
    """Concatenate per-video arrays; an empty result keeps the right dtype (and 2-D shape with ``width``)."""
    if arrays:
        return np.concatenate(arrays).astype(dtype, copy=False)
    return np.zeros((0, width) if width is not None else 0, dtype=dtype)


def build_report(setup: Setup, replay: Replay, videos: Sequence[ScoredVideo], warnings: Sequence[str]) -> dict:
    """Everything report.json holds. ``videos`` come from ``score_video``, in replay order."""
    n = len(setup.eval_classes)
    truth, truth_model, raw, smoothed = (_cat([getattr(v, name) for v in videos], np.int64)
                                         for name in ("truth", "truth_model", "raw", "smoothed"))
    topk = _cat([v.run.frames.topk for v in videos if len(v.run.frames)], np.int64, width=1)
    latencies = _cat([v.run.frames.latency_s for v in videos], np.float64)
    conf_raw = scoring.confusion_matrix(truth, raw, n)
    conf_smoothed = scoring.confusion_matrix(truth, smoothed, n)
    per_raw, per_smoothed = scoring.per_class(conf_raw), scoring.per_class(conf_smoothed)

    segments: list[dict[str, Any]] = []
    delays_raw: list[float | None] = []
    delays_smoothed: list[float | None] = []
    where = {name: i for i, name in enumerate(setup.eval_classes)}
    for video in videos:
        times = video.run.frames.time_s
        for seg in video.run.job.segments:
            inside = bool(((times >= seg.start_s) & (times < seg.end_s)).any())
            d_raw = scoring.time_to_correct(times, video.raw, seg.start_s, seg.end_s, where[seg.label])
            d_sm = scoring.time_to_correct(times, video.smoothed, seg.start_s, seg.end_s, where[seg.label])
            if inside:  # a segment past the video's end has no frames: not a failure to recognise it
                delays_raw.append(d_raw)
                delays_smoothed.append(d_sm)
            segments.append({"video": video.run.job.name, "line": seg.line, "label": seg.label,
                             "start_s": seg.start_s, "end_s": seg.end_s, "frames": inside,
                             "raw_s": _r(d_raw), "smoothed_s": _r(d_sm)})

    per_video = []
    changes = {"raw": 0, "smoothed": 0, "truth": 0}
    minutes_total = 0.0
    for video in videos:
        run = video.run
        duration = run.duration_s
        c = {"raw": scoring.label_changes(run.frames.raw), "smoothed": scoring.label_changes(run.frames.smoothed),
             "truth": scoring.label_changes(video.truth)}
        for key in changes:
            changes[key] += c[key]
        minutes_total += duration
        per_video.append({
            "video": run.job.name, "path": str(run.job.path), "state": run.state, "error": run.error,
            "duration_s": _r(duration, 3), "fps": _r(run.info.fps, 3), "frames_decoded": run.decoded,
            "frames_classified": len(run.frames), "frames_scored": int((video.truth >= 0).sum()),
            "dropped": run.dropped_total, "dropped_by_reason": dict(run.dropped),
            "accuracy_raw": _r(scoring.accuracy(video.truth, video.raw)),
            "accuracy_smoothed": _r(scoring.accuracy(video.truth, video.smoothed)),
            "changes_per_min": {k: _r(scoring.changes_per_minute(v, duration), 2) for k, v in c.items()},
            "timeline": video.timeline,
        })

    scored = truth >= 0
    raw_model = _cat([v.run.frames.raw for v in videos], np.int64)
    others = Counter(setup.class_names[int(i)] for i in raw_model[scored])
    for name in setup.eval_classes:
        others.pop(name, None)
    k = int(topk.shape[1])
    return {
        "model": {"source": setup.model, **setup.model_info},
        "labels": setup.labels,
        "mode": replay.mode,
        "settings": setup.settings,
        "classes": setup.eval_classes,
        "background": setup.background,
        "frames": {"decoded": sum(v.run.decoded for v in videos), "classified": int(len(truth)),
                   "scored": int(scored.sum()), "ignored": int((~scored).sum()),
                   "dropped": sum(v.run.dropped_total for v in videos)},
        "accuracy": {"raw": _r(scoring.accuracy(truth, raw)), "smoothed": _r(scoring.accuracy(truth, smoothed)),
                     "topk": _r(scoring.topk_accuracy(truth_model, topk)), "k": k},
        "macro_f1": {"raw": _r(scoring.macro_f1(per_raw)), "smoothed": _r(scoring.macro_f1(per_smoothed))},
        "per_class": [{"class": name, "support": pr["support"],
                       "raw": {m: _r(pr[m]) for m in ("precision", "recall", "f1")},
                       "smoothed": {m: _r(ps[m]) for m in ("precision", "recall", "f1")}}
                      for name, pr, ps in zip(setup.eval_classes, per_raw, per_smoothed, strict=True)],
        "confusion": {"rows": setup.eval_classes, "columns": [*setup.eval_classes, OTHER],
                      "raw": conf_raw.tolist(), "smoothed": conf_smoothed.tolist()},
        "other_predictions": dict(others.most_common(10)),
        "changes_per_min": {key: _r(scoring.changes_per_minute(v, minutes_total), 2) for key, v in changes.items()},
        "time_to_correct": {"raw": {k2: _r(v) if isinstance(v, float) else v
                                    for k2, v in scoring.summarize_delays(delays_raw).items()},
                            "smoothed": {k2: _r(v) if isinstance(v, float) else v
                                         for k2, v in scoring.summarize_delays(delays_smoothed).items()},
                            "segments": segments},
        "throughput_fps": _r(replay.classified / replay.wall_s if replay.wall_s > 0 else None, 2),
        "wall_s": _r(replay.wall_s, 3),
        "latency_ms": {k2: _r(v, 2) for k2, v in scoring.latency_ms(latencies).items()},
        "videos": per_video,
        "warnings": list(warnings),
    }


def write_predictions(path: Path, videos: Sequence[ScoredVideo], setup: Setup) -> Path:
    """One JSON line per classified frame: its truth, raw top-k, smoothed label and latency."""
    names, truth_names = setup.class_names, setup.eval_classes
    with path.open("w", encoding="utf-8") as fh:
        for video in videos:
            f = video.run.frames
            for i in range(len(f)):
                t = int(video.truth[i])
                record = {
                    "video": video.run.job.name, "seq": int(f.seq[i]), "time": round(float(f.time_s[i]), 4),
                    "truth": truth_names[t] if t >= 0 else None,
                    "top": [{"label": names[int(j)], "prob": round(float(p), 5)}
                            for j, p in zip(f.topk[i], f.topk_prob[i], strict=True) if j >= 0],
                    "smoothed": {"label": names[int(f.smoothed[i])], "prob": round(float(f.smoothed_prob[i]), 5)},
                    "correct_raw": None if t < 0 else bool(video.raw[i] == t),
                    "correct_smoothed": None if t < 0 else bool(video.smoothed[i] == t),
                    "latency_ms": round(float(f.latency_s[i]) * 1000, 2),
                }
                fh.write(json.dumps(record) + "\n")
    return path


def write_json(path: Path, report: dict) -> Path:
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path


# -- markdown ---------------------------------------------------------------------------------------

def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def num(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_rows(report: dict) -> list[list[str]]:
    """The headline numbers, raw vs smoothed (shared by report.md and the console)."""
    ttc = report["time_to_correct"]
    cpm = report["changes_per_min"]
    k = report["accuracy"]["k"]
    return [
        ["frame accuracy", pct(report["accuracy"]["raw"]), pct(report["accuracy"]["smoothed"])],
        [f"top-{k} accuracy", pct(report["accuracy"]["topk"]), "–"],
        ["macro F1", num(report["macro_f1"]["raw"], digits=3), num(report["macro_f1"]["smoothed"], digits=3)],
        [f"label changes / min (truth {num(cpm['truth'])})", num(cpm["raw"]), num(cpm["smoothed"])],
        ["time to correct label, median", num(ttc["raw"]["median_s"], " s", 2),
         num(ttc["smoothed"]["median_s"], " s", 2)],
        ["segments never correct", f"{ttc['raw']['never']}/{ttc['raw']['segments']}",
         f"{ttc['smoothed']['never']}/{ttc['smoothed']['segments']}"],
    ]


def smoothing_note(settings: dict) -> str:
    """What the "smoothed" column measures: the label the service shows, not each frame's top-1."""
    ema, margin = settings.get("ema"), settings.get("hysteresis")
    return (f"*Raw* is each frame's own top-1. *Smoothed* is the label the service shows on the video: the "
            f"class probabilities averaged over frames (EMA, weight {ema} on the past), the shown label kept "
            f"until another class scores more than {1 + margin:g} x its averaged probability (relative "
            f"hysteresis {margin}). It trades flicker (fewer label changes per minute) for lag: after each "
            f"change of scene the old label stays a few frames, which costs smoothed accuracy and "
            f"time to the correct label; on a noisy model it can also win frames the raw top-1 gets wrong."
            if ema is not None and margin is not None else "")


def render_markdown(report: dict, confusion_png: str | None = "confusion.png") -> str:
    m, f, s = report["model"], report["frames"], report["settings"]
    lat = report["latency_ms"]
    out = [
        f"# Replay evaluation: {m['source']}",
        "",
        f"Model `{m['source']}` ({m.get('arch')}, {m.get('classes')} classes, {m.get('device')} "
        f"{m.get('precision')}) · mode **{report['mode']}** · labels `{report['labels']}` · "
        f"{len(report['videos'])} video(s)",
        f"Smoothing: EMA {s.get('ema')}, hysteresis {s.get('hysteresis')} · batch {s.get('max_batch')} · "
        f"background: {report['background'] or 'not scored'}",
        "",
        table(["metric", "raw", "smoothed"], summary_rows(report)),
        "",
        smoothing_note(s),
        "",
        f"Frames: {f['classified']} classified, {f['scored']} scored, {f['ignored']} outside every segment "
        f"({'scored as ' + report['background'] if report['background'] else 'ignored'}), {f['dropped']} dropped.",
        f"Throughput {num(report['throughput_fps'], ' frames/s')} · latency p50 {num(lat['p50'], ' ms')}, "
        f"p99 {num(lat['p99'], ' ms')} · wall {num(report['wall_s'], ' s', 2)}",
        "",
        "## Per class",
        "",
        table(["class", "frames", "precision", "recall", "F1", "F1 smoothed"],
              [[c["class"], c["support"], num(c["raw"]["precision"], digits=3), num(c["raw"]["recall"], digits=3),
                num(c["raw"]["f1"], digits=3), num(c["smoothed"]["f1"], digits=3)] for c in report["per_class"]]),
        "",
        "## Confusion (raw; rows: truth, columns: prediction)",
        "",
        table(["truth \\ predicted", *report["confusion"]["columns"]],
              [[name, *row] for name, row in zip(report["confusion"]["rows"], report["confusion"]["raw"],
                                                 strict=True)]),
    ]
    if report["other_predictions"]:
        out += ["", "Predictions outside the labelled classes: "
                + ", ".join(f"{k} ({v})" for k, v in report["other_predictions"].items())]
    if confusion_png:
        out += ["", f"![confusion matrix]({confusion_png})"]
    out += ["", "## Videos", "",
            table(["video", "duration", "frames", "dropped", "accuracy", "smoothed", "changes/min raw",
                   "smoothed", "timeline"],
                  [[v["video"], num(v["duration_s"], " s"), v["frames_classified"], v["dropped"],
                    pct(v["accuracy_raw"]), pct(v["accuracy_smoothed"]), num(v["changes_per_min"]["raw"]),
                    num(v["changes_per_min"]["smoothed"]),
                    f"[png]({v['timeline']})" if v["timeline"] else "–"] for v in report["videos"]]),
            "", "## Time to correct label after each segment starts", "",
            table(["video", "line", "label", "start", "raw", "smoothed"],
                  [[g["video"], g["line"], g["label"], num(g["start_s"], " s", 2),
                    num(g["raw_s"], " s", 2) if g["frames"] else "no frames",
                    num(g["smoothed_s"], " s", 2) if g["frames"] else "no frames"]
                   for g in report["time_to_correct"]["segments"]])]
    for v in report["videos"]:
        if v["timeline"]:
            out += ["", f"![{v['video']}]({v['timeline']})"]
    if report["warnings"]:
        out += ["", "## Warnings", "", *[f"- {w}" for w in report["warnings"]]]
    return "\n".join(out) + "\n"


# -- comparison -------------------------------------------------------------------------------------

def compare_rows(reports: Sequence[dict]) -> list[list[str]]:
    """One row per headline metric, one column per model."""
    def each(fn: Any) -> list[str]:
        return [fn(r) for r in reports]

    k = reports[0]["accuracy"]["k"]
    return [
        ["frame accuracy, raw", *each(lambda r: pct(r["accuracy"]["raw"]))],
        ["frame accuracy, smoothed", *each(lambda r: pct(r["accuracy"]["smoothed"]))],
        [f"top-{k} accuracy", *each(lambda r: pct(r["accuracy"]["topk"]))],
        ["macro F1, raw", *each(lambda r: num(r["macro_f1"]["raw"], digits=3))],
        ["macro F1, smoothed", *each(lambda r: num(r["macro_f1"]["smoothed"], digits=3))],
        ["label changes / min, raw", *each(lambda r: num(r["changes_per_min"]["raw"]))],
        ["label changes / min, smoothed", *each(lambda r: num(r["changes_per_min"]["smoothed"]))],
        ["time to correct, median (smoothed)",
         *each(lambda r: num(r["time_to_correct"]["smoothed"]["median_s"], " s", 2))],
        ["throughput", *each(lambda r: num(r["throughput_fps"], " frames/s"))],
        ["latency p50 / p99", *each(lambda r: f"{num(r['latency_ms']['p50'], ' ms')} / "
                                             f"{num(r['latency_ms']['p99'], ' ms')}")],
        ["frames classified / dropped", *each(lambda r: f"{r['frames']['classified']} / {r['frames']['dropped']}")],
    ]


def render_comparison(titles: Sequence[str], reports: Sequence[dict]) -> str:
    return table(["metric", *titles], compare_rows(reports))
