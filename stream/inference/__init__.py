"""Frames to predictions: the batcher (across streams, fair), CPU lanes or the CUDA feeder, and the model in
service that both read once per batch."""
