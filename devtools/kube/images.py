"""Container images for the cluster's own parts, written as image archives without any engine.

The pod sandbox (pause), CoreDNS and the local-path provisioner's helper (busybox) are single
static binaries: a one-layer image of the binary is all they need. They are written in the
``docker save`` archive layout (``manifest.json`` naming the config and the layer by their
digests, with the image's tag), which ``ctr images import`` reads like any saved image. No
registry is reachable here, and the project's own images come from the Docker engine instead
(see :mod:`devtools.kube.cluster`).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ImageFile", "write_image_archive"]


@dataclass(frozen=True)
class ImageFile:
    """A file of the image: where it comes from on the host, its mode, and its symlinks."""

    source: Path
    mode: int = 0o755
    links: tuple[str, ...] = ()


def write_image_archive(
    path: Path,
    tag: str,
    files: Mapping[str, ImageFile],
    *,
    entrypoint: Sequence[str],
    user: str = "",
) -> None:
    """An archive of the image ``tag`` with ``files`` (image path -> file) as its only layer.

    Deterministic (fixed times and owners), so an unchanged image keeps its digest and a
    re-import is a no-op for containerd.
    """
    layer = _layer(files)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": list(entrypoint),
                "Env": ["PATH=/bin"],
                "User": user,
                "WorkingDir": "/",
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "devtools.kube.images"}],
        },
        sort_keys=True,
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}]
    ).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with tarfile.open(partial, "w") as archive:
        for name, data in ((config_name, config), (layer_name, layer), ("manifest.json", manifest)):
            _add(archive, name, data)
    partial.replace(path)


def _layer(files: Mapping[str, ImageFile]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        paths = [*files, *(link for file in files.values() for link in file.links)]
        directories = sorted(
            {str(parent) for name in paths for parent in Path(name.lstrip("/")).parents} - {"."}
        )
        for directory in (*directories, "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            layer.addfile(info)
        for name, file in sorted(files.items()):
            relative = name.lstrip("/")
            _add(layer, relative, file.source.read_bytes(), mode=file.mode)
            for link in file.links:
                info = tarfile.TarInfo(link.lstrip("/"))
                info.type, info.linkname = tarfile.SYMTYPE, "/" + relative
                layer.addfile(info)
    return buffer.getvalue()


def _add(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    archive.addfile(info, io.BytesIO(data))
