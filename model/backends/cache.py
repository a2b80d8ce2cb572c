"""Where compiled artefacts live: next to the bundle, one folder per (bundle hash, backend, version, precision).

``model.pt`` -> ``model.pt.compiled/openvino-2026.4.1-int8-<hash16>/`` holding the artefact files and
``agreement.json`` (how the artefact was built and how well it agrees with the torch fp32 reference).
A different bundle, backend version or precision is a different folder, so a stale artefact is never
served. Folders are written under a temporary name and renamed into place, so a reader never sees half.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

META_FILE = "agreement.json"


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ArtefactKey:
    bundle_hash: str
    backend: str
    backend_version: str
    precision: str

    @property
    def folder_name(self) -> str:
        version = "".join(c if c.isalnum() or c in ".-_" else "_" for c in self.backend_version)[:40]
        return f"{self.backend}-{version}-{self.precision}-{self.bundle_hash[:16]}"


def cache_root(bundle_path: Path) -> Path:
    return bundle_path.with_name(bundle_path.name + ".compiled")


def artefact_dir(bundle_path: Path, key: ArtefactKey) -> Path:
    return cache_root(bundle_path) / key.folder_name


def read_meta(folder: Path) -> dict[str, Any] | None:
    """The stored build record, or None when the folder is not a complete artefact."""
    meta = folder / META_FILE
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def staging_dir(final: Path) -> Path:
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, final: Path, meta: dict[str, Any]) -> Path:
    """Write the build record last, then move the whole folder into place (replacing an older one)."""
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final
