"""A pipeline from a config, as ``sightline run`` and each cluster worker make it: the model loaded and
warmed, the metrics, the event hub (when events are on) wired in as every stream's extra sink."""

from __future__ import annotations

import logging

from sightline.model.backends.build import BuildOptions
from sightline.model.backends.serving import open_classifier
from sightline.model.errors import ConfigError
from sightline.stream.config import RunConfig
from sightline.stream.event_config import label_problem
from sightline.stream.events.hub import EventHub
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.storage.stats import StorageStats

log = logging.getLogger("sightline")


def build_pipeline(config: RunConfig, metrics: Metrics | None = None) -> Pipeline:
    m = config.model
    classifier = open_classifier(m.source, device=m.device, precision=m.precision, backend=m.backend,
                                 compile=m.compile, options=BuildOptions(calibrate=m.calibrate, require_check=False))
    check_rule_labels(config, classifier.class_names)
    if classifier.bundle.preprocess.resize > m.max_resize:
        raise ConfigError(f"model.source: the model resizes frames to {classifier.bundle.preprocess.resize} px, over "
                          f"model.max_resize ({m.max_resize}); raise model.max_resize if that is intended")
    classifier.warmup(batch_size=min(config.batching.batch_size(classifier.device.type), 8))
    log.info("model %s", classifier.describe())
    metrics = metrics if metrics is not None else Metrics()
    storage = StorageStats()  # one for the pipeline's writers and the event history
    events = EventHub.build(config, metrics, storage)  # None unless events are on (docs/events.md)
    pipeline = Pipeline(classifier, config, metrics, extra_sinks=events.sinks_for if events else None,
                        storage=storage)
    pipeline.events = events
    return pipeline


def check_rule_labels(config: RunConfig, class_names: list[str]) -> None:
    """Refuse rules on labels the model lacks (they would never fire), once the model's classes are known."""
    problems = [f"events.rules[{i}].labels: {problem}" for i, rule in enumerate(config.events.rules)
                if (problem := label_problem(rule, class_names)) is not None]
    if problems:
        raise ConfigError("\n".join(problems))
