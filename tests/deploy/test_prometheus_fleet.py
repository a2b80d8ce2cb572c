"""Prometheus at fleet size: the scrape jobs drop exactly the ``_created`` series the service writes (nothing reads
them)."""

from __future__ import annotations

import re

import yaml

from tests.stream.test_deploy import dashboard_expressions, exported_names, metric_names, recording_rules
from tests.support.deploy_files import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"


def test_scrape_jobs_drop_the_created_series_and_nothing_else() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    exported = exported_names()
    created = {name for name in exported if name.endswith("_created")}
    assert created  # prometheus_client's Counter and Histogram objects write one beside each (login failures, video)
    for name in created:  # when its counter or histogram was made, not a metric of its own
        base = name.removesuffix("_created")
        assert f"{base}_total" in exported or f"{base}_count" in exported, name
    for job in config["scrape_configs"]:
        (rule,) = job["metric_relabel_configs"]
        assert rule["source_labels"] == ["__name__"] and rule["action"] == "drop"
        pattern = re.compile(f"^(?:{rule['regex']})$")  # Prometheus anchors its regexes
        assert {name for name in exported if pattern.match(name)} == created, job["job_name"]
    used = set().union(*(metric_names(e) for e in dashboard_expressions()), *(
        metric_names(e) for e in recording_rules().values()))
    assert not used & created
