"""A 10000×10000 photo is classified without ever holding a full-size float tensor.

As float32 the image alone is 10000 * 10000 * 3 * 4 bytes = 1.2 GB. Decoding it necessarily costs
PIL's buffer (4 bytes/pixel) plus the uint8 RGB array (3 bytes/pixel), about 0.7 GB; preprocessing
then resizes the uint8 array where it lies. So the peak resident memory of `sightline predict` on
this image must grow by less than the float tensor alone would take; any path through a full-size
float copy would grow by 1.9 GB or more. Measured: 0.83 GB (1.10 GB before the strip-wise RGB
conversion and the in-place resize removed two full-size uint8 temporaries).

Measured in a fresh process: Linux's VmHWM (peak RSS) is reset through /proc/self/clear_refs after
a warm-up prediction, so imports and the first forward pass do not count. tracemalloc cannot see
torch's allocations, hence the process-level measurement.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

SIDE = 10_000
FLOAT_BYTES = SIDE * SIDE * 3 * 4

# The `predict` subcommand itself, without the root's other subcommands (faster to import).
MEASURE = r"""
import argparse, json, sys
from sightline.model import cli

parser = argparse.ArgumentParser()
cli.register(parser.add_subparsers(required=True))

def main(argv):
    args = parser.parse_args(argv)
    return args.func(args)

def status_bytes(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

small, big, bundle, report = sys.argv[1:5]
main(["predict", small, "--model", bundle, "--json"])  # warm-up: imports, allocator, first forward
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # peak RSS := current RSS
before = status_bytes("VmRSS")
code = main(["predict", big, "--model", bundle, "--json"])
with open(report, "w") as f:
    json.dump({"code": code, "growth": status_bytes("VmHWM") - before}, f)
"""


def write_huge_jpeg(path: Path) -> None:
    gradient = Image.linear_gradient("L").resize((SIDE, SIDE), Image.BILINEAR)
    flipped = gradient.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    Image.merge("RGB", [gradient, flipped, gradient]).save(path, quality=80)


@pytest.mark.slow
@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs")
def test_10000x10000_image_predicts_without_a_full_size_float_tensor(tmp_path, bundle_path, write_photo):
    huge = tmp_path / "huge.jpg"
    write_huge_jpeg(huge)
    report = tmp_path / "report.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(write_photo("chelsea")), str(huge),
                           str(bundle_path), str(report)],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    result = json.loads(report.read_text())
    assert result["code"] == 0
    predictions = json.loads(proc.stdout.split("\n]\n", 1)[1])  # the second JSON document
    assert [p["image"] for p in predictions] == [str(huge)]
    print(f"peak RSS growth for the 10000x10000 image: {result['growth'] / 1e9:.2f} GB")
    assert result["growth"] < FLOAT_BYTES, f"peak grew by {result['growth'] / 1e9:.2f} GB"
