"""The pipeline: per stream, a factory builds the parts (source, queue, sinks, output), a registry keeps
streams by name, a runner starts and stops their threads, a watchdog restarts a stalled capture; the model
swap and ``build_pipeline`` (a pipeline from a config) live here too."""
