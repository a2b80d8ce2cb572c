"""Classifier against a torchvision reference pipeline (PIL -> IMAGENET1K_V1.transforms() -> same network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sightline.model.bundle import ModelBundle
from sightline.model.classifier import Classifier, Prediction
from sightline.model.errors import DeviceError, ImageLoadError
from sightline.model.preprocess import HOST_RESIZE_PIXELS, Preprocessor
from sightline.model.weights import imagenet_preprocess
from torchvision.models import ResNet18_Weights

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def photo_list(photos) -> list[np.ndarray]:
    return list(photos.values())


@pytest.fixture(scope="module")
def reference_inputs(photo_list) -> torch.Tensor:
    transforms = ResNet18_Weights.IMAGENET1K_V1.transforms()
    return torch.stack([transforms(Image.fromarray(p)) for p in photo_list])


@pytest.fixture(scope="module")
def prototype(reference_inputs, photos, make_resnet18) -> tuple[ModelBundle, torch.Tensor]:
    """A seeded random backbone whose fc has one class per photo (its centred, normalized feature),
    and the reference pipeline's probabilities for the photos.

    A random-init ResNet predicts the same class for every photo; this head makes the four top-1s
    differ by construction (Cauchy-Schwarz), so "same top-1 as the reference" means something.
    """
    net = make_resnet18(len(photos))
    head, net.fc = net.fc, torch.nn.Identity()
    with torch.no_grad():
        feats = net(reference_inputs)  # the reference pipeline: torchvision transforms -> network
        centred = feats - feats.mean(0)
        head.weight.copy_(centred / centred.norm(dim=1, keepdim=True))
        head.bias.copy_(-(head.weight @ feats.mean(0)))
        reference_probs = torch.softmax(head(feats), dim=1)
    net.fc = head
    bundle = ModelBundle(arch="resnet18", class_names=list(photos), state_dict=net.state_dict(),
                         preprocess=imagenet_preprocess())
    return bundle, reference_probs


@pytest.fixture(scope="module")
def prototype_bundle(prototype) -> ModelBundle:
    return prototype[0]


@pytest.fixture(scope="module")
def reference_probs(prototype) -> torch.Tensor:
    return prototype[1]


@pytest.fixture(scope="module")
def our_probs(prototype_bundle, photo_list) -> torch.Tensor:
    return Classifier(prototype_bundle, device="cpu").probabilities(photo_list)


def test_same_top1_as_torchvision_reference(our_probs, reference_probs):
    assert reference_probs.argmax(1).tolist() == [0, 1, 2, 3]  # the construction gives distinct top-1s
    assert our_probs.argmax(1).tolist() == reference_probs.argmax(1).tolist()


def test_probabilities_match_torchvision_reference(our_probs, reference_probs):
    assert our_probs.dtype == torch.float32 and our_probs.device.type == "cpu"
    torch.testing.assert_close(our_probs, reference_probs, rtol=0, atol=2e-3)


@pytest.fixture(scope="module")
def tiny_classifier(tiny_bundle) -> Classifier:
    return Classifier(tiny_bundle, device="cpu")


def test_bf16_autocast_on_cpu_stays_close_to_fp32(tiny_bundle, tiny_classifier, photo_list):
    bf16 = Classifier(tiny_bundle, device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    torch.testing.assert_close(bf16.probabilities(photo_list), tiny_classifier.probabilities(photo_list),
                               rtol=0, atol=0.03)


def test_pil_images_give_the_same_result_as_arrays(tiny_classifier, photo_list):
    from_pil = tiny_classifier.probabilities([Image.fromarray(p) for p in photo_list])
    torch.testing.assert_close(from_pil, tiny_classifier.probabilities(photo_list), rtol=0, atol=0)


def test_predict_returns_sorted_topk_with_labels(tiny_classifier, tiny_bundle, photos):
    results = tiny_classifier.predict([photos["chelsea"], photos["coffee"]], topk=2)
    assert len(results) == 2
    for top in results:
        assert len(top) == 2
        assert all(isinstance(p, Prediction) and p.label == tiny_bundle.class_names[p.index] for p in top)
        assert top[0].prob >= top[1].prob


def test_topk_larger_than_class_count_returns_every_class(tiny_classifier, photos):
    (top,) = tiny_classifier.predict([photos["rocket"]], topk=50)
    assert sorted(p.index for p in top) == [0, 1, 2]
    assert sum(p.prob for p in top) == pytest.approx(1.0, abs=1e-5)


def test_predict_on_nothing_is_empty(tiny_classifier):
    assert tiny_classifier.predict([]) == []


def test_grayscale_array_is_converted(tiny_classifier, photos):
    classifier = tiny_classifier
    gray = photos["coffee"].mean(axis=2).astype(np.uint8)
    torch.testing.assert_close(classifier.probabilities([gray]),
                               classifier.probabilities([np.repeat(gray[:, :, None], 3, axis=2)]))


def test_forward_rejects_an_unbatched_tensor_with_advice(tiny_classifier):
    with pytest.raises(ImageLoadError, match=r"add a batch dimension"):
        tiny_classifier.forward(torch.zeros(3, 56, 56))


def test_fp16_on_cpu_is_refused(tiny_bundle):
    with pytest.raises(DeviceError, match="fp16 needs a CUDA device"):
        Classifier(tiny_bundle, device="cpu", precision="fp16")


@pytest.mark.cpu_only
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_clear_error(tiny_bundle):
    with pytest.raises(DeviceError, match="CUDA is not available.*--device cpu"):
        Classifier(tiny_bundle, device="cuda")


def test_unknown_device_is_a_clear_error(tiny_bundle):
    with pytest.raises(DeviceError, match="unknown device 'gpu0'"):
        Classifier(tiny_bundle, device="gpu0")


def test_warmup_runs_the_network_on_batches_of_the_working_size(tiny_classifier):
    seen: list[tuple[int, ...]] = []
    hook = tiny_classifier.network.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    try:
        tiny_classifier.warmup(batch_size=2, iterations=3)
    finally:
        hook.remove()
    crop = tiny_classifier.bundle.preprocess.crop
    assert seen == [(2, 3, crop, crop)] * 3


@pytest.mark.gpu
@cuda
def test_fp16_cuda_agrees_with_fp32_top1(prototype_bundle, photo_list, reference_probs):
    fp16 = Classifier(prototype_bundle, device="cuda", precision="auto")
    fp32 = Classifier(prototype_bundle, device="cuda", precision="fp32")
    assert fp16.precision == "fp16"
    p16, p32 = fp16.probabilities(photo_list), fp32.probabilities(photo_list)
    assert p16.argmax(1).tolist() == p32.argmax(1).tolist() == reference_probs.argmax(1).tolist()
    torch.testing.assert_close(p32, reference_probs, rtol=0, atol=2e-3)


@pytest.mark.gpu
@cuda
def test_cuda_preprocessing_matches_cpu_including_host_resized_large_frames(photos):
    spec = imagenet_preprocess()
    side = int(HOST_RESIZE_PIXELS ** 0.5) + 64  # above the threshold: resized on the host
    large = np.asarray(Image.fromarray(photos["astronaut"]).resize((side, side), Image.BILINEAR))
    images = [photos["chelsea"], large]
    on_gpu = Preprocessor(spec, torch.device("cuda"))(images).cpu()
    on_cpu = Preprocessor(spec, torch.device("cpu"))(images)
    diff = (on_gpu - on_cpu).abs()
    assert float(diff.max()) <= 1.0 / (255 * min(spec.std)) + 1e-5
    assert float(diff.mean()) <= 2e-4


def test_batchnorm_is_folded_into_convolutions_without_changing_outputs() -> None:
    from sightline.model.architectures import build_network
    from sightline.model.classifier import fold_batchnorm

    torch.manual_seed(0)
    net = build_network("resnet18", 10).eval()
    for m in net.modules():  # non-trivial statistics, so folding has something to do
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(net(x), folded(x), atol=1e-4, rtol=1e-4)
