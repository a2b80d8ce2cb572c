import random

import numpy as np
import torch
from sightline.training.state import capture_rng, load_state, restore_rng, save_state


def _draw(generator: torch.Generator) -> tuple:
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)],
            torch.rand(3, generator=generator).tolist())


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    save_state(tmp_path / "last.pt", {"rng": [capture_rng(g)]})
    expected = _draw(g)
    _draw(g)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    restore_rng(load_state(tmp_path / "last.pt")["rng"][0], g)
    assert state["format"] == "sightline-train-state"
    assert _draw(g) == expected
