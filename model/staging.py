"""The CUDA hot path: bucketed batches, reused (pinned) staging buffers, copy/compute overlap.

A batch of working-size uint8 frames (what the stream decoders deliver) is centre-cropped on the host
straight into a staging buffer, so only crop×crop×3 bytes per frame travel. On CUDA:

- staging buffers are pinned and allocated once per (bucket, slot), then reused;
- the upload runs non-blocking on a side CUDA stream; the model runs on its own compute stream, which
  waits for that upload only (an event), so the upload of the next batch overlaps this batch's compute;
- two slots (double buffering): batch i+1 is staged while batch i computes; a slot is reused only after
  its results were read back;
- probabilities are copied back non-blocking into a pinned buffer; ``collect`` waits for that batch only;
- batches are padded up to a few fixed sizes (buckets), so torch.compile and CUDA graphs see a few
  shapes, all warmed up (and captured) by ``warmup`` before the service reports ready.

On the CPU the same code runs synchronously (no streams, no pinning): that is how it is unit-tested.
Frames that are not at the working size take the classifier's general preprocessing path.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
import torch
from sightline.model.classifier import Classifier
from sightline.model.preprocess import resized_size

log = logging.getLogger(__name__)


def bucket_sizes(max_batch: int) -> tuple[int, ...]:
    """Powers of two below ``max_batch``, then ``max_batch``: 1, 2, 4, 8, 16, 32 for 32; 1, 2, 4, 8, 12 for 12."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    sizes = []
    size = 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch)
    return tuple(sizes)


def bucket_for(n: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds ``n`` frames."""
    for size in buckets:
        if n <= size:
            return size
    raise ValueError(f"a batch of {n} frames is larger than the largest bucket ({buckets[-1]})")


def crop_anchor(height: int, width: int, crop: int) -> tuple[int, int]:
    """torchvision's center_crop anchor (top, left)."""
    return int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))


@dataclass
class Slot:
    """One bucket's buffers in one double-buffering slot; allocated once, reused for every batch."""

    host_in: torch.Tensor  # bucket×crop×crop×3 uint8, pinned on CUDA
    device_in: torch.Tensor  # the same on the device (on the CPU: host_in itself)
    host_out: torch.Tensor  # bucket×classes float32, pinned on CUDA
    uploaded: torch.cuda.Event | None = None
    done: torch.cuda.Event | None = None


@dataclass
class Pending:
    """A submitted batch: its results are ready once ``slot.done`` has fired."""

    slot_index: int
    slot: Slot
    count: int
    probs: torch.Tensor | None = None  # the general path (frames not at the working size) computes here


class StagingPool:
    """Staging buffers per (bucket, slot), allocated on first use and reused after; ``allocations`` counts them."""

    def __init__(self, device: torch.device, crop: int, classes: int) -> None:
        self.device = device
        self.crop = crop
        self.classes = classes
        self.cuda = device.type == "cuda"
        self.allocations = 0
        self._slots: dict[tuple[int, int], Slot] = {}

    def get(self, bucket: int, index: int) -> Slot:
        slot = self._slots.get((bucket, index))
        if slot is None:
            slot = self._slots[(bucket, index)] = self._allocate(bucket)
            self.allocations += 1
        return slot

    def _allocate(self, bucket: int) -> Slot:
        shape = (bucket, self.crop, self.crop, 3)
        host_in = torch.zeros(shape, dtype=torch.uint8, pin_memory=self.cuda)
        host_out = torch.zeros((bucket, self.classes), dtype=torch.float32, pin_memory=self.cuda)
        if not self.cuda:
            return Slot(host_in, host_in, host_out)
        device_in = torch.zeros(shape, dtype=torch.uint8, device=self.device)
        return Slot(host_in, device_in, host_out, torch.cuda.Event(), torch.cuda.Event())

    def __len__(self) -> int:
        return len(self._slots)


class BucketedRunner:
    """uint8 frames -> probabilities through fixed-size buckets, with copy/compute overlap on CUDA.

    ``submit`` (one thread) stages and enqueues a batch and returns at once on CUDA; ``collect`` (another
    thread, same order) waits for that batch's results. At most ``slots`` batches are in flight: a third
    ``submit`` waits until the oldest one was collected.
    """

    def __init__(self, classifier: Classifier, max_batch: int, slots: int = 2, cuda_graphs: bool = False) -> None:
        self.classifier = classifier
        self.device = classifier.device
        self.cuda = self.device.type == "cuda"
        self.buckets = bucket_sizes(max_batch)
        spec = classifier.bundle.preprocess
        self.crop = spec.crop
        self.resize = spec.resize
        self.pool = StagingPool(self.device, self.crop, classifier.bundle.num_classes)
        self.slots = slots
        self._free = [threading.Semaphore(1) for _ in range(slots)]
        self._next = 0
        # a torch.compile'd network gets its graphs from torch.compile(mode="reduce-overhead"), not from here
        self.cuda_graphs = cuda_graphs and self.cuda and not classifier.compiled
        self._mean = torch.tensor(spec.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._inv_std = 1.0 / (torch.tensor(spec.std, device=self.device).view(1, 3, 1, 1) * 255.0)
        self._inputs: dict[int, torch.Tensor] = {}  # per bucket: the normalized network input (static for graphs)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._compute_stream = torch.cuda.Stream(self.device) if self.cuda else None
        if self._compute_stream is not None:  # weights and constants were written on the default stream
            self._compute_stream.wait_stream(torch.cuda.current_stream(self.device))
        self.warmed = False

    # -- the two halves of one batch --------------------------------------------------------------------

    def submit(self, images: list[np.ndarray], timeout: float | None = None) -> Pending:
        """Stage ``images`` and enqueue their upload and model run; returns before the GPU has finished."""
        if not images:
            raise ValueError("no images to submit")
        bucket = bucket_for(len(images), self.buckets)
        index = self._next
        if not self._free[index].acquire(timeout=timeout):  # None: wait as long as it takes
            raise TimeoutError(f"staging slot {index} still in use after {timeout}s")
        self._next = (index + 1) % self.slots
        try:
            return self._submit(images, bucket, index)
        except BaseException:
            self._free[index].release()
            raise

    def collect(self, pending: Pending) -> torch.Tensor:
        """The batch's probabilities (count×classes float32 on the CPU, a copy); frees its slot."""
        try:
            if pending.probs is not None:
                return pending.probs
            if pending.slot.done is not None:
                pending.slot.done.synchronize()
            return pending.slot.host_out[:pending.count].clone()
        finally:
            self._free[pending.slot_index].release()

    def run(self, images: list[np.ndarray]) -> torch.Tensor:
        """submit + collect, for callers that do not overlap batches."""
        return self.collect(self.submit(images))

    def _submit(self, images: list[np.ndarray], bucket: int, index: int) -> Pending:
        slot = self.pool.get(bucket, index)
        if not self._at_working_size(images):
            with torch.inference_mode():  # rare (a frame that skipped the decoder's scaler): the general path
                probs = self.classifier.forward(self.classifier.preprocessor(images))
            return Pending(index, slot, len(images), probs)
        self._stage(images, slot.host_in)
        with torch.inference_mode():
            if not self.cuda:
                slot.host_out[:bucket].copy_(self._compute(bucket, slot.device_in))
                return Pending(index, slot, len(images))
            assert self._copy_stream is not None and self._compute_stream is not None
            assert slot.uploaded is not None and slot.done is not None
            with torch.cuda.stream(self._copy_stream):
                slot.device_in.copy_(slot.host_in, non_blocking=True)
                slot.uploaded.record(self._copy_stream)
            self._compute_stream.wait_event(slot.uploaded)
            with torch.cuda.stream(self._compute_stream):
                probs = self._compute(bucket, slot.device_in)
                slot.host_out.copy_(probs, non_blocking=True)
                slot.done.record(self._compute_stream)
        return Pending(index, slot, len(images))

    def _at_working_size(self, images: list[np.ndarray]) -> bool:
        for img in images:
            if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
                return False
            height, width = img.shape[:2]
            if resized_size(height, width, self.resize) != (height, width):
                return False
        return True

    def _stage(self, images: list[np.ndarray], host_in: torch.Tensor) -> None:
        """Centre-crop each frame straight into the staging buffer (the one host copy we make)."""
        staged = host_in.numpy()
        crop = self.crop
        for i, img in enumerate(images):
            top, left = crop_anchor(img.shape[0], img.shape[1], crop)
            staged[i] = img[top:top + crop, left:left + crop]

    def _compute(self, bucket: int, device_in: torch.Tensor) -> torch.Tensor:
        """Normalize into the bucket's input tensor, then the network (a CUDA graph replay when captured)."""
        x = self._input(bucket)
        x.copy_(device_in.permute(0, 3, 1, 2))  # N×H×W×3 viewed as channels_last N×3×H×W: no transpose
        x.sub_(self._mean).mul_(self._inv_std)
        captured = self._graphs.get(bucket)
        if captured is not None:
            captured[0].replay()
            return captured[1]
        return self.classifier.probabilities_on_device(x)

    def _input(self, bucket: int) -> torch.Tensor:
        x = self._inputs.get(bucket)
        if x is None:
            x = torch.empty((bucket, 3, self.crop, self.crop), device=self.device, dtype=torch.float32,
                            memory_format=torch.channels_last)
            self._inputs[bucket] = x
        return x

    # -- warm-up ----------------------------------------------------------------------------------------

    def warmup(self, iterations: int = 2) -> None:
        """Run every bucket (compiling its shape, autotuning cuDNN, allocating its buffers), then capture a
        CUDA graph per bucket when asked. A capture that fails leaves that bucket on the eager path."""
        height, width = resized_size(self.resize, self.resize, self.resize)
        frame = np.zeros((height, width, 3), dtype=np.uint8)
        for bucket in self.buckets:
            for _ in range(iterations):
                self.run([frame] * bucket)
        if self.cuda_graphs:
            for bucket in self.buckets:
                self._capture(bucket)
            for bucket in self.buckets:
                self.run([frame] * bucket)
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.warmed = True
        log.info("model warmed up for batch buckets %s on %s%s", ",".join(map(str, self.buckets)), self.device,
                 " with CUDA graphs" if self._graphs else "")

    def _capture(self, bucket: int) -> None:
        assert self._compute_stream is not None
        x = self._input(bucket)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.inference_mode():
                self._compute_stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(self._compute_stream):  # warm the side stream before capture
                    self.classifier.probabilities_on_device(x, cache_casts=False)
                torch.cuda.current_stream(self.device).wait_stream(self._compute_stream)
                with torch.cuda.graph(graph, stream=self._compute_stream, capture_error_mode="thread_local"):
                    out = self.classifier.probabilities_on_device(x, cache_casts=False)
        except RuntimeError as exc:
            log.warning("CUDA graph capture failed for batch bucket %d (%s); that bucket runs eagerly",
                        bucket, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return
        self._graphs[bucket] = (graph, out)

    @property
    def captured(self) -> tuple[int, ...]:
        return tuple(sorted(self._graphs))
