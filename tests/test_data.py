"""MNIST files: where they are looked for, damaged ones refused with a clear paragraph, downloads only
when missing (here only from localhost), and the real copy when there is one."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import socket
import threading
from pathlib import Path

import pytest
import torch

from mnist_arch import data
from mnist_arch.errors import MnistArchError

REPO = Path(__file__).resolve().parents[1]
NAMES = list(data.FILES)
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # canonical MNIST
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def idx_images(n: int, rows: int = 28, cols: int = 28, magic: int = 0x803) -> bytes:
    pixels = (torch.arange(n * rows * cols) * 7 % 256).to(torch.uint8).numpy().tobytes()
    return b"".join(v.to_bytes(4, "big") for v in (magic, n, rows, cols)) + pixels


def idx_labels(n: int, magic: int = 0x801) -> bytes:
    return magic.to_bytes(4, "big") + n.to_bytes(4, "big") + bytes(i % 10 for i in range(n))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on leaving: connecting is refused at once


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here reaches a real host: the mirrors are closed localhost ports, proxies bypassed."""
    monkeypatch.setattr(data, "MIRRORS", [f"http://127.0.0.1:{closed_port()}/mnist/" for _ in range(2)])
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.delenv(data.ENV_VAR, raising=False)


@pytest.fixture
def tiny(monkeypatch) -> dict[str, bytes]:
    """Tiny stand-ins for the four files (5 training, 3 test items); FILES expects their counts and MD5s."""
    files = {NAMES[0]: idx_images(5), NAMES[1]: idx_labels(5), NAMES[2]: idx_images(3), NAMES[3]: idx_labels(3)}
    counts = {NAMES[0]: 5, NAMES[1]: 5, NAMES[2]: 3, NAMES[3]: 3}
    md5 = {name: hashlib.md5(gzip.compress(b, mtime=0)).hexdigest() for name, b in files.items()}
    monkeypatch.setattr(data, "FILES", {name: (counts[name], md5[name]) for name in NAMES})
    return files


def write_raw(root: Path, files: dict[str, bytes], gz: tuple[str, ...] = ()) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if name in gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(content, mtime=0))
        else:
            (raw / name).write_bytes(content)
    return raw


# --- where the data is looked for -------------------------------------------------------------


def test_data_root_argument_then_environment_then_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env"))
    assert data.resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv(data.ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.resolve_data_root() == tmp_path / "xdg" / "mnist-arch"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.resolve_data_root() == tmp_path / "home" / ".cache" / "mnist-arch"


# --- parsing ----------------------------------------------------------------------------------


def test_read_idx_parses_images_and_labels_plain_or_gz(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_images(4))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_labels(12)))
    images = data.read_idx(tmp_path / "train-images-idx3-ubyte", count=4)
    labels = data.read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", count=12)
    assert images.shape == (4, 28, 28) and images.dtype == torch.uint8
    assert images.flatten()[:3].tolist() == [0, 7, 14] and images[3, 27, 27] == (4 * 784 - 1) * 7 % 256
    assert labels.tolist() == [i % 10 for i in range(12)]


def test_count_is_validated_against_the_file_name(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"  # the name promises 10000 test images
    path.write_bytes(idx_images(3))
    with pytest.raises(MnistArchError, match=r"expected \(10000, 28, 28\)"):
        data.read_idx(path)


@pytest.mark.parametrize(
    "name, content, count, expected",
    [
        ("train-images-idx3-ubyte", idx_images(5)[:-100], 5, ["truncated", "3836 bytes", "expected 3936"]),
        ("train-images-idx3-ubyte", idx_images(5) + b"\0", 5, ["trailing bytes", "3937 bytes", "expected 3936"]),
        ("train-labels-idx1-ubyte", b"\0\0\x08", 5, ["truncated", "3 bytes", "expected 13"]),
        ("train-images-idx3-ubyte", idx_images(5, magic=0x801), 5, ["0x00000801", "0x00000803", "labels file"]),
        ("t10k-labels-idx1-ubyte", idx_images(5), 5, ["0x00000803", "0x00000801", "an IDX images file"]),
        ("t10k-labels-idx1-ubyte", b"<!DOCTYPE html><p>Moved</p>", 5, ["not an IDX file", "<!DOCTYPE"]),
        ("train-images-idx3-ubyte", idx_images(5, rows=32, cols=32), 5, ["(5, 32, 32)", "(5, 28, 28)"]),
        ("train-labels-idx1-ubyte", idx_labels(4), 5, ["(4,)", "expected (5,)"]),
        ("train-labels-idx1-ubyte", idx_labels(4)[:-1] + b"\x0c", 4, ["label 12", "0 to 9"]),
    ],
    ids=["truncated", "trailing", "shorter-than-header", "wrong-magic", "swapped", "foreign", "dims", "count",
         "label-range"],
)
def test_damaged_files_are_refused_with_one_paragraph(tmp_path, name, content, count, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MnistArchError) as info:
        data.read_idx(path, count=count)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert "MNIST_ARCH_DATA" in message  # and what to do about it
    for part in expected:
        assert part in message


def test_gz_sizes_are_those_once_decompressed_and_broken_gz_is_named(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_labels(5)[:-1]))
    with pytest.raises(MnistArchError, match="12 bytes once decompressed, expected 13"):
        data.read_idx(path, count=5)
    path.write_bytes(gzip.compress(idx_labels(4))[:-10])
    with pytest.raises(MnistArchError, match="Cannot read the MNIST file .*train-labels-idx1-ubyte.gz"):
        data.read_idx(path, count=4)


# --- finding, downloading, loading -------------------------------------------------------------


def test_missing_data_without_network_fails_fast_naming_what_to_do(tmp_path):
    root = tmp_path / "empty"
    with pytest.raises(MnistArchError) as info:
        data.load_mnist(root)
    message = str(info.value)
    assert "\n" not in message
    for part in ("MNIST_ARCH_DATA", "--data-dir", str(root / "MNIST" / "raw"), *NAMES, "Connection refused"):
        assert part in message
    assert not root.exists()  # nothing created for a path that may be a typo


def test_a_local_copy_is_trusted_without_checksums(tmp_path, tiny, monkeypatch):
    # MD5s that match nothing: files already there are judged by their headers and sizes only.
    monkeypatch.setattr(data, "FILES", {name: (count, "0" * 32) for name, (count, _) in data.FILES.items()})
    write_raw(tmp_path, tiny, gz=(NAMES[0], NAMES[3]))
    mnist = data.load_mnist(tmp_path)
    assert mnist.train_images.shape == (5, 28, 28) and mnist.train_images.dtype == torch.uint8
    assert mnist.test_labels.tolist() == [0, 1, 2] and mnist.test_labels.dtype == torch.int64
    assert data.load_mnist(tmp_path).train_images is mnist.train_images  # parsed once per process


def test_environment_variable_names_the_folder(tmp_path, tiny, monkeypatch):
    write_raw(tmp_path, tiny)
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    assert data.load_mnist().train_labels.tolist() == [0, 1, 2, 3, 4]


def test_pointing_at_the_mnist_folder_itself_says_where_to_point(tmp_path, tiny):
    write_raw(tmp_path, tiny)
    with pytest.raises(MnistArchError, match=f"point MNIST_ARCH_DATA or --data-dir at {tmp_path} instead"):
        data.ensure_mnist(tmp_path / "MNIST")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server: (folder it serves, its URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def test_missing_files_are_downloaded_checked_and_stored_for_torchvision(tmp_path, tiny, mirror, monkeypatch):
    folder, url = mirror
    for name, content in tiny.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(content, mtime=0))
    monkeypatch.setattr(data, "MIRRORS", [*data.MIRRORS, url])  # the dead ones are tried first, then skipped
    root = tmp_path / "data"
    write_raw(root, {NAMES[1]: tiny[NAMES[1]]})  # one file present: only the other three are fetched
    assert data.load_mnist(root).train_images.shape == (5, 28, 28)
    raw = root / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(NAMES)  # uncompressed, no temporary left
    for name in NAMES:
        assert (raw / name).read_bytes() == tiny[name]


def test_a_download_with_the_wrong_md5_is_not_kept(tmp_path, tiny, mirror):
    folder, url = mirror
    for name, content in tiny.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(content + b"x", mtime=0))
    with pytest.raises(MnistArchError, match=r"MD5 [0-9a-f]{32}, expected") as info:
        data.ensure_mnist(tmp_path, mirrors=[url])
    assert "MNIST_ARCH_DATA" in str(info.value)
    assert not (tmp_path / "MNIST").exists()


def test_normalize_scales_then_standardizes():
    pixels = torch.tensor([0, 255], dtype=torch.uint8)
    assert torch.allclose(data.normalize(pixels), torch.tensor([0.0, 1.0]))
    assert torch.allclose(data.normalize(pixels, 0.5, 0.25), torch.tensor([-2.0, 2.0]))
    with pytest.raises(TypeError, match="uint8"):
        data.normalize(pixels.float())


# --- the real data ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_root() -> Path:
    root = Path(os.environ.get(data.ENV_VAR) or REPO.parent / "shared" / "data")
    if not all(data._find(root / "MNIST" / "raw", name) for name in data.FILES):
        pytest.skip(
            f"real MNIST not found in {root / 'MNIST' / 'raw'}: set MNIST_ARCH_DATA to the folder that "
            "contains MNIST/raw/ (from the repository root: ../shared/data)"
        )
    return root


def test_real_mnist_shapes_labels_and_torchvision_agree(real_root):
    torchvision = pytest.importorskip("torchvision")
    mnist = data.load_mnist(real_root)
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_images.dtype == mnist.test_images.dtype == torch.uint8
    assert mnist.train_labels.dtype == mnist.test_labels.dtype == torch.int64
    assert torch.bincount(mnist.train_labels, minlength=10).tolist() == TRAIN_LABEL_COUNTS
    assert torch.bincount(mnist.test_labels, minlength=10).tolist() == TEST_LABEL_COUNTS
    # The usual normalization constants hold for this copy too.
    pixels = data.normalize(mnist.train_images)
    assert abs(pixels.mean().item() - 0.1307) < 5e-4 and abs(pixels.std().item() - 0.3081) < 5e-4
    test = torchvision.datasets.MNIST(real_root, train=False)
    assert torch.equal(test.data[0], mnist.test_images[0]) and int(test.targets[0]) == mnist.test_labels[0]
    assert torch.equal(test.data, mnist.test_images) and torch.equal(test.targets, mnist.test_labels)
