"""Limits a model's input obeys, in a module without torch: config validation reads them, and a process that
only validates configs (the cluster's controller, a simulated worker) should not load torch for a number."""

MAX_RESIZE = 4096  # no ResNet input is larger; 60000 would ask for tens of GB per frame (serving caps lower)
