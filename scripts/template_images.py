"""Images with no Python and no glibc, built here from Debian packages with ``docker import``.

    python scripts/template_images.py busybox|musl TAG

- **busybox**: nothing but Debian's ``busybox-static`` (one static binary, its
  applets as symlinks in ``/bin``), an empty ``/tmp``; no ``/etc/passwd``, no
  libc, no loader, no Python.
- **musl**: the same plus Debian's ``musl`` package (``/lib/ld-musl-x86_64.so.1``
  and its libc): a musl-based system with no glibc at all.

No registry is needed: the ``.deb`` files come from apt (``apt-get download``,
cached in ``images/.cache/debs``), are unpacked with ``dpkg-deb -x`` and the
root filesystem goes to ``docker import`` as a tar stream. Used by the Docker
tests of templates and by ``scripts/bench``.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

CACHE = Path(__file__).resolve().parents[1] / "images" / ".cache" / "debs"
PACKAGES = {"busybox": ["busybox-static"], "musl": ["busybox-static", "musl"]}


def deb(package: str) -> Path:
    """The package's ``.deb``, downloaded once with apt."""
    CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(CACHE.glob(f"{package}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", "-q", package], cwd=CACHE, check=True, capture_output=True)
        found = sorted(CACHE.glob(f"{package}_*.deb"))
    return found[-1]


def rootfs(kind: str) -> bytes:
    """The image's root filesystem as a tar."""
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as folder, tarfile.open(fileobj=buffer, mode="w") as tar:
        root = Path(folder)
        for package in PACKAGES[kind]:
            subprocess.run(["dpkg-deb", "-x", str(deb(package)), str(root)], check=True)
        busybox = root / "bin" / "busybox"
        applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
        for name in ("usr/share/doc", "usr/share/man"):
            subprocess.run(["rm", "-rf", str(root / name)], check=True)
        tar.add(root, arcname=".", filter=_as_root)
        for applet in applets.stdout.split():
            if applet != "busybox":
                link = tarfile.TarInfo(f"./bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        tmp = tarfile.TarInfo("./tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(tmp)
    return buffer.getvalue()


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build(kind: str, tag: str) -> str:
    """Import the ``kind`` image as ``tag`` (PATH set; the shell as its command); returns ``tag``."""
    subprocess.run(
        [
            *("docker", "import"),
            *("--change", "ENV PATH=/bin:/usr/bin:/sbin:/usr/sbin"),
            *("--change", 'CMD ["/bin/sh"]'),
            *("-", tag),
        ],
        input=rootfs(kind),
        check=True,
        capture_output=True,
    )
    return tag


if __name__ == "__main__":
    print(build(sys.argv[1], sys.argv[2]))
