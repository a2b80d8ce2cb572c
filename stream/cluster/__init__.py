"""Sightline on a Ray cluster: the controller (the HTTP API process), pipeline workers (Ray actors, each running
today's ``Pipeline``), placement by spare capacity and failover. (Replay evaluation spread over Ray is
stream/eval/ray_replay.py.)

Ray is an optional extra (``pip install -e ".[cluster]"``): nothing imports it until a command asks for a
cluster, and this package's modules import it inside the functions that need it.
"""
