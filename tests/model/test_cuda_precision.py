"""fp16/bf16 autocast against fp32 on CUDA, on crops of scikit-image's photos (GPU suite; skipped without CUDA).

The figures (top-1 agreement, max probability difference) are printed for the GPU suite's report.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sightline.model.bundle import ModelBundle
from sightline.model.classifier import Classifier
from sightline.model.preprocess import Preprocessor
from sightline.model.weights import imagenet_preprocess

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def crops(photos: dict[str, np.ndarray], per_photo: int = 16, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, photo in enumerate(photos.values()):
        h, w = photo.shape[:2]
        for _ in range(per_photo):
            side = int(rng.uniform(0.5, 0.9) * min(h, w))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            images.append(np.ascontiguousarray(photo[y:y + side, x:x + side]))
            labels.append(label)
    return images, labels


@pytest.fixture(scope="module")
def prototype_bundle(photos, make_resnet18) -> ModelBundle:
    """A seeded backbone with one class per photo (its centred mean feature as the class vector), so the
    crops get real, differing decisions instead of a random network's near-ties."""
    net = make_resnet18(len(photos))
    head, net.fc = net.fc, torch.nn.Identity()
    preprocess = Preprocessor(imagenet_preprocess(), torch.device("cpu"))
    with torch.no_grad():
        feats = net(preprocess(list(photos.values())))
        centred = feats - feats.mean(0)
        head.weight.copy_(centred / centred.norm(dim=1, keepdim=True))
        head.bias.copy_(-(head.weight @ feats.mean(0)))
    net.fc = head
    return ModelBundle("resnet18", list(photos), net.state_dict(), imagenet_preprocess())


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_agrees_with_fp32_on_photo_crops(prototype_bundle, photos, precision) -> None:
    images, _ = crops(photos)
    amp = Classifier(prototype_bundle, device="cuda", precision=precision)
    fp32 = Classifier(prototype_bundle, device="cuda", precision="fp32")
    p_amp, p32 = amp.probabilities(images), fp32.probabilities(images)
    top_amp, top32 = p_amp.argmax(1), p32.argmax(1)
    agreement = float((top_amp == top32).float().mean())
    max_diff = float((p_amp - p32).abs().max())
    print(f"{precision} vs fp32 on {len(images)} photo crops: top-1 agreement {agreement:.4f}, "
          f"max probability difference {max_diff:.5f}")
    tolerance = 0.01 if precision == "fp16" else 0.05  # bf16 keeps 8 mantissa bits, fp16 11
    assert max_diff <= tolerance
    # a top-1 may flip only where fp32 itself is nearly undecided (a margin below twice the difference)
    top2 = p32.topk(2, dim=1).values
    margins = (top2[:, 0] - top2[:, 1])[top_amp != top32]
    assert bool((margins <= 2 * max_diff).all()), margins
    assert agreement >= 0.95
