"""Sightline: streaming video recognition (decode -> batched ResNet18 -> labelled video, Prometheus metrics).

One import package with three subpackages, mapped from the repository's top-level folders:
``sightline.model`` (model/), ``sightline.training`` (training/) and ``sightline.stream`` (stream/).
This root holds only the ``sightline`` command, so importing it is cheap.
"""

__version__ = "0.2.0"
