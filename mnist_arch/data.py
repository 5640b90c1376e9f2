"""MNIST on disk and in memory, and the batch augmentation the trainer runs on its device.

The data folder ROOT is, in order: the `data_dir` argument (the command line's --data-dir), the
environment variable MNIST_ARCH_DATA, or ~/.cache/mnist-arch ($XDG_CACHE_HOME/mnist-arch when that is
set). It uses torchvision's layout, ROOT/MNIST/raw/<the four IDX files, each optionally .gz>, so that
`torchvision.datasets.MNIST(ROOT)` reads the same folder.

Files found there are trusted once their IDX headers and sizes check out: a local copy may differ from
the canonical bytes (the shared copy's training images do) and still be fine. Only what we download
ourselves is checked against the canonical MD5s.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import os
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mnist_arch.errors import MnistArchError
from mnist_arch.paths import DATA_ENV, mnist_root
from mnist_arch.spec import Augment

ENV_VAR = DATA_ENV

# File name -> (number of items the validator expects, MD5 of the canonical .gz as published).
FILES = {
    "train-images-idx3-ubyte": (60000, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte": (60000, "d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte": (10000, "9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte": (10000, "ec29112dd5afa0611ce80d1b7f02629c"),
}
# torchvision's mirrors, in its order.
MIRRORS = ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
TIMEOUT_S = 10  # a connect or a read that stalls this long fails the attempt (offline: fail in seconds)
BUDGET_S = 120  # the whole of one file (the largest is 9.9 MB)

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # IDX: 0, 0, type 0x08 (ubyte), number of dimensions
SIDE = 28


# ---------------------------------------------------------------------------------------------
# Finding, downloading and parsing the files


def resolve_data_root(data_dir: str | Path | None = None) -> Path:
    """The folder that holds MNIST/raw/: `data_dir`, else $MNIST_ARCH_DATA, else the user's cache (the rule
    of `mnist_arch.paths.mnist_root`, without a project's table)."""
    return mnist_root(data_dir)


def _find(folder: Path, name: str) -> Path | None:
    """The file `name` in `folder`, uncompressed or else as .gz (torchvision itself reads only the former)."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def read_idx(path: str | Path, count: int | None = None) -> Tensor:
    """Parse one MNIST IDX file (or its .gz) into uint8: [count, 28, 28] images or [count] labels.

    Whether it holds images or labels comes from its name; `count` defaults to the count FILES gives for
    that name (tests pass a small one). Anything that is not exactly such a file raises MnistArchError.
    """
    path = Path(path)
    name = path.name.removesuffix(".gz")
    images = "images" in name
    if count is None:
        if name not in FILES:
            raise MnistArchError(f"{path} is not one of the MNIST files ({', '.join(FILES)}).")
        count = FILES[name][0]
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise MnistArchError(
            f"Cannot read the MNIST file {path}: {exc}. Delete it so that it is downloaded again, or point "
            f"{ENV_VAR} (or --data-dir) at a folder whose MNIST/raw/ holds intact copies."
        ) from None

    magic, header, dims = (IMAGES_MAGIC, 16, (count, SIDE, SIDE)) if images else (LABELS_MAGIC, 8, (count,))
    what = f"{count} images of {SIDE}x{SIDE}" if images else f"{count} labels"
    expected = header + count * (SIDE * SIDE if images else 1)
    size = f"{len(raw)} bytes" + (" once decompressed" if path.suffix == ".gz" else "")

    def bad(problem: str) -> MnistArchError:
        return MnistArchError(
            f"The MNIST file {path} {problem}. Delete it so that it is downloaded again, or point {ENV_VAR} "
            f"(or --data-dir) at a folder whose MNIST/raw/ holds intact copies of the four files."
        )

    if len(raw) < header:
        raise bad(f"is truncated: it has {size}, expected {expected} (a {header}-byte header and {what})")
    found_magic = int.from_bytes(raw[:4], "big")
    if found_magic != magic:
        # Say what it is instead: the other IDX kind (files swapped), or something else entirely.
        it_is = {IMAGES_MAGIC: "an IDX images file", LABELS_MAGIC: "an IDX labels file"}.get(
            found_magic, f"not an IDX file at all (it begins with {raw[:12]!r})"
        )
        kind = "images" if images else "labels"
        raise bad(
            f"is not an IDX {kind} file: its magic number is 0x{found_magic:08X}, expected 0x{magic:08X}; "
            f"it is {it_is}"
        )
    found_dims = tuple(int.from_bytes(raw[i : i + 4], "big") for i in range(4, header, 4))
    if found_dims != dims:
        raise bad(f"has dimensions {found_dims} in its header, expected {dims} ({what})")
    if len(raw) != expected:
        state = "is truncated" if len(raw) < expected else "has trailing bytes"
        raise bad(f"{state}: it has {size}, expected {expected} (a {header}-byte header and {what})")

    # One copy into a writable buffer, then a zero-copy view: no per-sample Python.
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=header).view(dims)
    if not images and count and int(data.max()) > 9:
        raise bad(f"holds label {int(data.max())}; MNIST labels are 0 to 9")
    return data


def _misplaced(root: Path) -> str:
    """A hint when the files sit one or two levels up from where torchvision's layout wants them."""
    for place, parent in ((root / "raw", root.parent), (root, root.parent.parent)):
        if all(_find(place, name) for name in FILES):
            if place == parent / "MNIST" / "raw":
                return f" {place} holds the four files: point {ENV_VAR} or --data-dir at {parent} instead."
            return f" {place} holds the four files: move them into {root / 'MNIST' / 'raw'}."
    return ""


def _download(url: str, dest: Path, md5: str) -> None:
    """Fetch a .gz within TIMEOUT_S per stall and BUDGET_S in all, check its MD5, write it uncompressed."""
    deadline = time.monotonic() + BUDGET_S
    chunks = []
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        while chunk := response.read(1 << 16):
            if time.monotonic() > deadline:
                raise TimeoutError(f"took longer than {BUDGET_S} s")
            chunks.append(chunk)
    data = b"".join(chunks)
    found = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if found != md5:
        raise ValueError(f"MD5 {found}, expected {md5} (a damaged or altered download)")
    # Create the folder only now (a mistyped path stays uncreated offline), and write to a temporary name
    # then rename, so that an interrupted run never leaves a half file behind.
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", delete=False) as tmp:
        tmp.write(gzip.decompress(data))
    os.replace(tmp.name, dest)


def ensure_mnist(data_dir: str | Path | None = None, mirrors: list[str] | None = None) -> Path:
    """Return the data root, downloading only the files it lacks (from `mirrors`, default MIRRORS).

    Fails with an MnistArchError that says where it looked and how to point elsewhere when files are
    missing and no mirror delivers them. A mirror that fails once is not tried again for the other
    files, so that an offline machine fails within seconds.
    """
    root = resolve_data_root(data_dir)
    raw = root / "MNIST" / "raw"
    missing = [name for name in FILES if _find(raw, name) is None]
    if not missing:
        return root
    hint = _misplaced(root)
    failures: list[str] = []
    live = [] if hint else list(MIRRORS if mirrors is None else mirrors)
    for name in missing:
        for mirror in list(live):
            try:
                _download(f"{mirror}{name}.gz", raw / name, FILES[name][1])
                break
            except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError, timeout, MD5, disk
                failures.append(f"{mirror}{name}.gz: {exc}")
                live.remove(mirror)
        if _find(raw, name) is None:
            lacks = ", ".join(n for n in FILES if _find(raw, n) is None)
            tried = f"downloading failed ({'; '.join(failures)})" if failures else "nothing was downloaded"
            raise MnistArchError(
                f"MNIST is not in {raw}: it lacks {lacks} (each may also be .gz), and {tried}. "
                f"Point the environment variable {ENV_VAR} or the --data-dir option at a folder ROOT that "
                f"holds ROOT/MNIST/raw/ with the four files {', '.join(FILES)} (torchvision's layout), or "
                f"put them in {raw}.{hint}"
            )
    return root


class MNIST(NamedTuple):
    train_images: Tensor  # uint8 [60000, 28, 28]
    train_labels: Tensor  # int64 [60000]
    test_images: Tensor  # uint8 [10000, 28, 28]
    test_labels: Tensor  # int64 [10000]


@functools.lru_cache(maxsize=4)
def _load_cpu(root: Path) -> MNIST:
    # Keyed on the resolved root: every test and run in a process shares one parse of the 55 MB.
    raw = root / "MNIST" / "raw"
    train_images, train_labels, test_images, test_labels = (read_idx(_find(raw, name)) for name in FILES)
    return MNIST(train_images, train_labels.long(), test_images, test_labels.long())


def load_mnist(root: str | Path | None = None, device: str | torch.device = "cpu") -> MNIST:
    """All of MNIST as tensors on `device` (downloaded first if missing, see `ensure_mnist`).

    Parsed once per process and folder; on the CPU the tensors are the cached ones, so treat them as
    read-only (`.float()` and indexing make copies; in-place ops would change every later caller's data).
    """
    return MNIST(*(t.to(device) for t in _load_cpu(ensure_mnist(root))))


def normalize(images: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """uint8 pixels -> float32 in [0, 1] -> (x - mean) / std. The one place this happens."""
    if images.dtype != torch.uint8:  # floats would be scaled twice (and .float() would not copy them)
        raise TypeError(f"normalize expects uint8 pixels, got {images.dtype}")
    return images.float().div_(255).sub_(mean).div_(std)


# ---------------------------------------------------------------------------------------------
# Augmentation: torchvision's RandomAffine, for a whole batch on its device in one grid_sample


def sample_affine_params(
    n: int,
    size: tuple[int, int],
    aug: Augment,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Draw n (angle, translate_xy, scale, shear) as RandomAffine.make_params does, per sample.

    angle ~ U[-degrees, degrees]; translate ~ U[-t*W, t*W] x U[-t*H, t*H] pixels, rounded to whole pixels
    as torchvision does; scale ~ U[aug.scale]; x-shear ~ U[-shear, shear] degrees. Drawn on the
    generator's device (CPU by default) and moved to `device`.
    """
    h, w = size
    source = generator.device if generator is not None else torch.device(device)

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        u = torch.rand(n, *shape, generator=generator, device=source)
        return (low + (high - low) * u).to(device)

    angle = uniform(-aug.degrees, aug.degrees)
    max_shift = torch.tensor([aug.translate * w, aug.translate * h], device=device)
    translate = torch.round(uniform(-1.0, 1.0, 2) * max_shift)
    scale = uniform(*aug.scale)
    shear = uniform(-aug.shear, aug.shear)
    return angle, translate, scale, shear


def affine_matrices(angle: Tensor, translate_xy: Tensor, scale: Tensor, shear: Tensor) -> Tensor:
    """[N, 2, 3] inverse affine maps (output pixel -> input pixel), torchvision's convention.

    Per sample: angle and x-shear in degrees ([N]), translate in pixels ([N, 2], x right, y down), scale
    ([N]). Coordinates are pixels with the origin at the image centre, as in torchvision's
    `_get_inverse_affine_matrix(center=[0, 0], angle, translate, scale, [shear, 0])`; a positive angle
    turns the image clockwise on screen (y points down), as torchvision's `affine` does.
    """
    rot, sx = torch.deg2rad(angle), torch.deg2rad(shear)
    # Forward rotate-scale-shear R(angle) @ SHx(shear) without the scale (y-shear is 0); determinant 1.
    a, c = torch.cos(rot), torch.sin(rot)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    d = torch.cos(rot) - c * torch.tan(sx)
    # Its inverse, divided by the scale, applied after undoing the translation.
    m00, m01, m10, m11 = d / scale, -b / scale, -c / scale, a / scale
    tx, ty = translate_xy[:, 0], translate_xy[:, 1]
    row0 = torch.stack([m00, m01, -(m00 * tx + m01 * ty)], dim=-1)
    row1 = torch.stack([m10, m11, -(m10 * tx + m11 * ty)], dim=-1)
    return torch.stack([row0, row1], dim=1)


def warp_affine(images: Tensor, matrices: Tensor, fill: float = 0.0) -> Tensor:
    """Resample [N, C, H, W] float images through per-sample inverse maps from `affine_matrices`.

    Bilinear, `fill` outside the image. affine_grid with align_corners=False puts -1 and +1 on the outer
    pixel edges, so pixel units about the centre become grid units by dividing by (W/2, H/2): exactly the
    grid torchvision's `_affine_grid` builds, so results agree to float rounding.
    """
    n, c, h, w = images.shape
    half = torch.tensor([w / 2, h / 2], dtype=torch.float32, device=images.device)
    m = matrices.to(device=images.device, dtype=torch.float32)
    # theta = D^-1 M D for the linear part and D^-1 t for the shift, with D = diag(W/2, H/2).
    linear = m[:, :, :2] * half[None, None, :] / half[None, :, None]
    theta = torch.cat([linear, m[:, :, 2:] / half[None, :, None]], dim=2)
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    # Sample in float32 even for half-precision images: a bf16 grid would be off by up to ~0.05 pixel.
    # grid_sample pads with zeros; shifting by `fill` first blends edges into `fill` (torchvision, given a
    # fill, also multiplies the edge pixels by its mask: the same away from the border and with fill=None).
    shifted = images.float() - fill
    out = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out + fill).to(images.dtype)


def random_affine(
    images: Tensor, aug: Augment, generator: torch.Generator | None = None, fill: float = 0.0
) -> Tensor:
    """torchvision's RandomAffine(aug.degrees, (t, t), aug.scale, aug.shear, BILINEAR) per sample.

    Output has the input's shape, dtype and device. `fill` is the value of black outside the image:
    0 on pixels / 255, -mean / std on images already passed through `normalize`.
    """
    n, _, h, w = images.shape
    params = sample_affine_params(n, (h, w), aug, generator, images.device)
    return warp_affine(images, affine_matrices(*params), fill)
