"""The streaming service: a folder per stage a frame goes through (sources/, inference/, outputs/, events/),
the pipeline that wires them per stream, the HTTP service over it, the Ray cluster and replay evaluation.

The modules at this level are the kernel every stage shares: config (and event_config), errors, urls,
frames, buffers, lifecycle, stats, metrics, ice. They import no stage. docs/architecture.md has the map.
"""
