"""Replay evaluation: score a model on recorded video against ground-truth label segments.

``labels`` reads and checks the ground truth, ``replay`` runs the serving pipeline over the videos and
collects every result, ``scoring`` holds the metrics as pure functions, ``report`` writes the outputs.
"""
