"""The whole evaluation: check everything that can be checked up front, replay each model, write its report.

All user errors (labels file, videos, model classes, options) surface before the first frame is
decoded, so a long replay never dies at the end on a typo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sightline.model.backends.serving import open_classifier
from sightline.model.classifier import Classifier
from sightline.model.errors import SightlineError
from sightline.stream.config import BatchingConfig, SmoothingConfig
from sightline.stream.eval import plots, scoring
from sightline.stream.eval.labels import LabelsError, Problems, VideoJob, check_classes, read_labels, resolve_videos
from sightline.stream.eval.replay import VideoInfo, past_end_warnings, probe, replay
from sightline.stream.eval.report import (
    OTHER,
    Setup,
    build_report,
    compare_rows,
    evaluation_classes,
    pct,
    render_comparison,
    render_markdown,
    score_video,
    timeline_names,
    write_json,
    write_predictions,
)

log = logging.getLogger("sightline.eval")


@dataclass
class EvalOptions:
    labels: Path
    models: list[str]  # one, or two for a side-by-side comparison
    out: Path
    videos: list[Path] = field(default_factory=list)
    realtime: bool = False
    background: str | None = None
    device: str = "auto"
    precision: str = "auto"
    backend: str = "torch"
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    parallel: int = 4
    ray: str | None = None  # a Ray cluster's address: the videos are spread over its workers (ray_replay.py)


@dataclass
class Outcome:
    reports: list[dict]
    out_dirs: list[Path]
    comparison: str | None
    failed_videos: int


def evaluate(opts: EvalOptions) -> Outcome:
    segments = read_labels(opts.labels)  # a labels file that cannot be read stops here (all its rows' problems)
    # then every other problem, of every kind, is collected and reported at once, before any frame is decoded
    problems = Problems()
    found = resolve_videos(opts.labels, segments, opts.videos, problems)
    jobs, infos = [], []
    for job in found:
        try:
            infos.append(probe(job.path))
        except LabelsError as exc:
            problems.add("unreadable videos", str(exc))
            continue
        jobs.append(job)
    used = {job.name: list(job.segments) for job in found}
    classifiers = []
    for source in opts.models:
        try:
            classifier = open_classifier(source, device=opts.device, precision=opts.precision, backend=opts.backend)
        except SightlineError as exc:
            problems.add("models that cannot be opened", str(exc))
            continue
        check_classes(used, classifier.class_names, source, opts.background, problems)
        classifiers.append(classifier)
    problems.raise_if_any()
    warnings = [w for job, info in zip(jobs, infos, strict=True) for w in past_end_warnings(job, info)]
    for warning in warnings:
        log.warning("%s", warning)

    compare = len(opts.models) > 1
    out_dirs = [opts.out / f"model_{chr(ord('a') + i)}" for i in range(len(opts.models))] if compare else [opts.out]
    reports = []
    failed = 0
    for source, classifier, out_dir in zip(opts.models, classifiers, out_dirs, strict=True):
        report = evaluate_model(classifier, source, jobs, infos, opts, out_dir, warnings)
        failed = max(failed, sum(v["state"] == "failed" for v in report["videos"]))
        reports.append(report)
    comparison = None
    if compare:
        titles = [f"{chr(ord('A') + i)}: {source}" for i, source in enumerate(opts.models)]
        comparison = render_comparison(titles, reports)
        (opts.out / "compare.md").write_text(
            f"# Replay evaluation: side by side ({reports[0]['mode']} mode, labels `{opts.labels}`)\n\n"
            + comparison + "\n\n" + "\n".join(f"- {t}: [report]({d.name}/report.md)"
                                             for t, d in zip(titles, out_dirs, strict=True)) + "\n",
            encoding="utf-8")
        write_json(opts.out / "compare.json", {
            "models": titles, "reports": [str(d / "report.json") for d in out_dirs],
            "rows": {row[0]: row[1:] for row in compare_rows(reports)}})
    return Outcome(reports, out_dirs, comparison, failed)


def evaluate_model(classifier: Classifier, source: str, jobs: list[VideoJob], infos: list[VideoInfo],
                   opts: EvalOptions, out_dir: Path, warnings: list[str]) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    max_batch = opts.batching.batch_size(classifier.device.type)
    if classifier.device.type == "cuda":  # autotuning out of the measured throughput; the CPU has none to do
        classifier.warmup(batch_size=min(max_batch, 8))
    setup = Setup(
        model=source, model_info=classifier.describe(), class_names=classifier.class_names,
        eval_classes=evaluation_classes(jobs, opts.background), background=opts.background,
        labels=str(opts.labels),
        settings={"max_batch": max_batch, "max_wait_ms": opts.batching.max_wait_ms,
                  "ema": opts.smoothing.ema, "hysteresis": opts.smoothing.hysteresis, "parallel": opts.parallel},
    )
    if opts.ray:
        from sightline.stream.eval.ray_replay import cluster_replay

        result = cluster_replay(opts.ray, source, opts.device, opts.precision, opts.backend, jobs, infos,
                                realtime=opts.realtime, batching=opts.batching, smoothing=opts.smoothing,
                                out_dir=out_dir, parallel=opts.parallel, label=Path(source).name)
    else:
        result = replay(classifier, jobs, infos, realtime=opts.realtime, batching=opts.batching,
                        smoothing=opts.smoothing, out_dir=out_dir, parallel=opts.parallel, label=Path(source).name)
    videos = [score_video(run, setup) for run in result.videos]
    for video, name in zip(videos, timeline_names(videos), strict=True):
        run = video.run
        plots.plot_timeline(out_dir / name, f"{run.job.name}: {pct(scoring.accuracy(video.truth, video.raw))} raw, "
                                            f"{pct(scoring.accuracy(video.truth, video.smoothed))} smoothed",
                            run.frames.time_s, run.duration_s,
                            {"truth": video.truth, "raw": video.raw, "smoothed": video.smoothed},
                            setup.eval_classes, OTHER)
        video.timeline = name
    failures = [f"{v.job.name}: replay {v.state}: {v.error}" for v in result.videos if v.state == "failed"]
    report = build_report(setup, result, videos, [*warnings, *failures])
    plots.plot_confusion(out_dir / "confusion.png", report["confusion"]["rows"], report["confusion"]["columns"],
                         {"raw": np.array(report["confusion"]["raw"]),
                          "smoothed": np.array(report["confusion"]["smoothed"])})
    write_predictions(out_dir / "predictions.jsonl", videos, setup)
    write_json(out_dir / "report.json", report)
    (out_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return report

