"""What the benchmark scripts share: the CPU's name (every figure names it), a tiny classifier, and HTTP that
stays on this machine."""

from __future__ import annotations

import platform
import urllib.request
from pathlib import Path

# urlopen without the environment's proxy settings: everything a benchmark opens is on 127.0.0.1, and an
# http_proxy would otherwise carry those requests to another host
open_local = urllib.request.build_opener(urllib.request.ProxyHandler({})).open


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def tiny_classifier():  # noqa: ANN201 - a sightline Classifier (torch is imported only by the scripts that use it)
    """A random-init ResNet18 with 4 classes at 56 px on the CPU: the benchmarks that measure the service's own
    costs, not the model's."""
    import torch
    from sightline.model.architectures import build_network
    from sightline.model.bundle import ModelBundle, PreprocessSpec
    from sightline.model.classifier import Classifier

    torch.manual_seed(0)
    net = build_network("resnet18", 4)
    bundle = ModelBundle("resnet18", ["a", "b", "c", "d"], net.state_dict(), PreprocessSpec(resize=64, crop=56),
                         {"source": "benchmark"})
    return Classifier(bundle, device="cpu")
