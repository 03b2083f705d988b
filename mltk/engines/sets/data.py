"""The sets UMBC trains on: point clouds (ModelNet meshes, voxel grids, N-point arrays) and Gaussian mixtures.

Sources, by name (``data.name``):

    mog              amortised clustering: 2-D mixtures of 4 diagonal Gaussians, the Set Transformer/UMBC
                     generator (pi ~ Dir(1), mu ~ U(-4, 4), sigma ~ U(0.1, 0.6)), fresh sets every step
    modelnet:PATH    ModelNet's own layout, a folder or the .zip: <class>/{train,test}/*.off (or .off.gz);
                     each mesh is sampled uniformly on its surface (area-weighted triangles)
    npz:PATH         an .npz with ``points`` (S, N, d) and ``labels`` (S,), optional ``shape_names``
    h5:PATH          the PointNet HDF5 layout: ``data`` (S, N, 3) and ``label`` (S, 1) (needs h5py)
    voxels:PATH      a folder of ``<class>.npy[.gz]`` occupancy grids (S, 1, D, D, D): a set = occupied voxel centres

Every cloud is centred and scaled into the unit ball. Sources without a train/test split are split per class
(``test_fraction``, seeded); ModelNet folders keep their own split.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import torch

from mltk.core.errors import ArtifactError, DataMissingError, UsageError
from mltk.core.seeding import generator as seeded_generator


class MeshFormatError(ArtifactError):
    """A malformed OFF file."""


# ---------------------------------------------------------------- OFF meshes


def parse_off(text: str, where: str = "OFF file") -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float64, triangles (F, 3) int64) of an OFF mesh; polygons are fanned into triangles.
    Accepts ModelNet's known defect of counts glued to the header (``OFF490 518 0``)."""
    lines = [(number, line.split("#", 1)[0].strip()) for number, line in enumerate(text.splitlines(), 1)]
    lines = [(number, line) for number, line in lines if line]
    if not lines or not lines[0][1].startswith("OFF"):
        raise MeshFormatError(f"{where}: line {lines[0][0] if lines else 1}: expected the header OFF",
                              hint="is this an OFF mesh?")
    header_rest, body = lines[0][1][3:].strip(), lines[1:]
    if not header_rest:
        if not body:
            raise MeshFormatError(f"{where}: line 2: missing the counts line (vertices faces edges)")
        counts_line, body = body[0], body[1:]
    else:
        counts_line = (lines[0][0], header_rest)
    try:
        n_vertices, n_faces = (int(v) for v in counts_line[1].split()[:2])
    except ValueError:
        raise MeshFormatError(f"{where}: line {counts_line[0]}: expected 'vertices faces edges' counts, "
                              f"got {counts_line[1]!r}") from None
    if len(body) < n_vertices + n_faces:
        raise MeshFormatError(f"{where}: line {body[-1][0] if body else counts_line[0]}: the file ends after "
                              f"{len(body)} of {n_vertices + n_faces} vertex and face lines")
    vertices = np.empty((n_vertices, 3))
    for i, (number, line) in enumerate(body[:n_vertices]):
        try:
            vertices[i] = [float(v) for v in line.split()[:3]]
        except ValueError:
            raise MeshFormatError(f"{where}: line {number}: expected three coordinates, got {line!r}") from None
    triangles = []
    for number, line in body[n_vertices:n_vertices + n_faces]:
        try:
            values = [int(v) for v in line.split()]
            size, corners = values[0], values[1:values[0] + 1]
        except (ValueError, IndexError):
            raise MeshFormatError(f"{where}: line {number}: expected a face 'n i1 ... in', got {line!r}") from None
        if size < 3 or len(corners) != size or min(corners) < 0 or max(corners) >= n_vertices:
            raise MeshFormatError(f"{where}: line {number}: a face needs at least 3 vertex indices below "
                                  f"{n_vertices}, got {line!r}")
        triangles += [(corners[0], corners[j], corners[j + 1]) for j in range(1, size - 1)]
    return vertices, np.asarray(triangles, dtype=np.int64).reshape(-1, 3)


def read_off(path: Path | str, data: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An OFF mesh from a file (``.off`` or ``.off.gz``) or from its bytes."""
    path = Path(path)
    raw = data if data is not None else path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return parse_off(raw.decode("utf-8", errors="replace"), str(path))


def sample_surface(vertices: np.ndarray, triangles: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` points uniform on the mesh surface: triangles by area, then uniform barycentric coordinates."""
    corners = vertices[triangles]  # (F, 3, 3)
    areas = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    if not areas.sum() > 0:
        raise MeshFormatError("the mesh has no surface area (no non-degenerate triangle)")
    chosen = rng.choice(len(areas), size=count, p=areas / areas.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    a, b, c = corners[chosen, 0], corners[chosen, 1], corners[chosen, 2]
    return a + u[:, None] * (b - a) + v[:, None] * (c - a)


def normalise_cloud(points: np.ndarray) -> np.ndarray:
    """Centred and scaled so the farthest point lies on the unit sphere."""
    centred = points - points.mean(0)
    return centred / max(np.linalg.norm(centred, axis=1).max(), 1e-12)


# ---------------------------------------------------------------- point-cloud datasets


@dataclasses.dataclass
class PointClouds:
    train_points: torch.Tensor  # (S, P, d) float32
    train_labels: torch.Tensor  # (S,) int64
    test_points: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]


def resolve(path: str) -> Path:
    """A data path as given, else under $MLTK_DATA."""
    import os

    found = Path(path).expanduser()
    if not found.exists() and os.environ.get("MLTK_DATA"):
        found = Path(os.environ["MLTK_DATA"]) / path
    if not found.exists():
        raise DataMissingError(f"{path}: no such file or folder",
                               hint="give the path, or one relative to $MLTK_DATA (see docs/sets.md for formats)")
    return found


def load_point_clouds(name: str, *, points: int, test_fraction: float, seed: int) -> PointClouds:
    kind, _, path = name.partition(":")
    if kind not in ("modelnet", "npz", "h5", "voxels") or not path:
        raise UsageError(f"data.name {name!r}: expected mog, modelnet:PATH, npz:PATH, h5:PATH or voxels:PATH")
    where = resolve(path)
    rng = np.random.default_rng(seed)
    if kind == "modelnet":
        return _modelnet(where, points, rng)
    if kind == "voxels":
        clouds, labels, names = _voxels(where, points, rng)
    else:
        clouds, labels, names = _arrays(where, kind)
        if clouds.shape[1] > points:  # the first ``points`` of each cloud, as PointNet++'s loader takes them
            clouds = clouds[:, :points]
    clouds = np.stack([normalise_cloud(c) for c in clouds]).astype(np.float32)
    train, test = _split_per_class(labels, test_fraction, seed)
    t = torch.from_numpy
    return PointClouds(t(clouds[train]), t(labels[train]), t(clouds[test]), t(labels[test]), names)


def _arrays(path: Path, kind: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if kind == "npz":
        try:
            data = np.load(path, allow_pickle=False)
            clouds, labels = data["points"], data["labels"].reshape(-1)
        except (KeyError, ValueError, OSError) as error:
            raise ArtifactError(f"{path}: not an npz with 'points' (S, N, d) and 'labels' (S,) ({error})") from None
        names = [str(n) for n in data["shape_names"]] if "shape_names" in data else []
    else:
        try:
            import h5py
        except ImportError:
            raise UsageError("h5:PATH needs h5py", hint="pip install h5py") from None
        with h5py.File(path, "r") as handle:
            clouds, labels = handle["data"][:], handle["label"][:].reshape(-1)
        names = []
    if clouds.ndim != 3 or len(clouds) != len(labels):
        raise ArtifactError(f"{path}: points {clouds.shape} and labels {labels.shape} do not match (S, N, d) / (S,)")
    if not np.isfinite(clouds).all():
        raise ArtifactError(f"{path}: {int((~np.isfinite(clouds)).sum())} non-finite coordinate(s)")
    labels = labels.astype(np.int64)
    names = names or [str(i) for i in range(int(labels.max()) + 1)]
    return clouds.astype(np.float64), labels, names


def _voxels(folder: Path, points: int, rng) -> tuple[np.ndarray, np.ndarray, list[str]]:
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".npy", ".npy.gz")))
    if not files:
        raise DataMissingError(f"{folder}: no <class>.npy or <class>.npy.gz grids")
    clouds, labels, names = [], [], []
    for label, file in enumerate(files):
        raw = gzip.decompress(file.read_bytes()) if file.name.endswith(".gz") else file.read_bytes()
        grids = np.load(io.BytesIO(raw), allow_pickle=False)
        names.append(file.name.split(".")[0])
        for grid in grids.reshape(len(grids), *grids.shape[-3:]):
            occupied = np.argwhere(grid > 0.5).astype(np.float64)
            if len(occupied) == 0:
                continue
            pick = rng.choice(len(occupied), size=points, replace=len(occupied) < points)
            clouds.append(occupied[pick] + rng.random((points, 3)) - 0.5)  # jitter inside the voxel
            labels.append(label)
    return np.stack(clouds), np.asarray(labels, dtype=np.int64), names


def _modelnet(where: Path, points: int, rng) -> PointClouds:
    """ModelNet's <class>/{train,test}/*.off layout, from a folder or a zip (any prefix folder above it)."""
    if where.is_file() and zipfile.is_zipfile(where):
        archive = zipfile.ZipFile(where)
        entries = [(n, lambda n=n: archive.read(n)) for n in archive.namelist() if n.endswith((".off", ".off.gz"))]
    else:
        entries = [(str(p.relative_to(where)), p.read_bytes) for p in sorted(where.rglob("*.off*"))
                   if p.name.endswith((".off", ".off.gz"))]
    split_items: dict[str, list[tuple]] = {"train": [], "test": []}
    for name, read in sorted(entries, key=lambda e: e[0]):
        parts = Path(name).parts
        if len(parts) >= 3 and parts[-2] in split_items:
            split_items[parts[-2]].append((parts[-3], name, read))
    classes = sorted({c for items in split_items.values() for c, _, _ in items})
    if not classes:
        raise DataMissingError(f"{where}: no <class>/train/*.off or <class>/test/*.off meshes",
                               hint="point data.name at ModelNet10/ModelNet40 (folder or zip)")
    out = {}
    for split, items in split_items.items():
        clouds = [normalise_cloud(sample_surface(*read_off(name, read()), points, rng)) for _, name, read in items]
        labels = [classes.index(c) for c, _, _ in items]
        out[split] = (torch.from_numpy(np.stack(clouds).astype(np.float32)) if clouds else torch.zeros(0, points, 3),
                      torch.tensor(labels, dtype=torch.int64))
    return PointClouds(*out["train"], *out["test"], classes)


def _split_per_class(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): per class, a seeded ``test_fraction`` held out (none from a class of one)."""
    g = seeded_generator(seed, 0x7E57)
    train, test = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[torch.randperm(len(members), generator=g).numpy()]
        held = int(round(test_fraction * len(members))) if len(members) > 1 else 0
        test += members[:held].tolist()
        train += members[held:].tolist()
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))


# ---------------------------------------------------------------- mixtures of Gaussians


def sample_mixtures(sets: int, size: int, generator: torch.Generator, *, components: int = 4, dims: int = 2,
                    dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(points (sets, size, dims), component of each point (sets, size)) from random diagonal mixtures."""
    gamma = -torch.log(torch.rand(sets, components, generator=generator).clamp(min=1e-12))  # Dir(1) via Gamma(1)
    pi = gamma / gamma.sum(1, keepdim=True)
    mu = torch.rand(sets, components, dims, generator=generator) * 8 - 4
    sigma = torch.rand(sets, components, dims, generator=generator) * 0.5 + 0.1
    which = torch.multinomial(pi, size, replacement=True, generator=generator)  # (sets, size)
    noise = torch.randn(sets, size, dims, generator=generator)
    centre = mu.gather(1, which[..., None].expand(-1, -1, dims))
    spread = sigma.gather(1, which[..., None].expand(-1, -1, dims))
    return (centre + spread * noise).to(dtype), which


def mixture_nll(outputs: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-likelihood per element of sets ``x`` (B, N, d) under the mixtures ``outputs`` (B, C, 1+2d)
    (logit, mean, raw scale; scale = softplus(raw) >= 1e-2): (B,) averaged over each set's real elements."""
    d = x.shape[-1]
    logit, mean, raw = outputs[..., 0], outputs[..., 1:1 + d], outputs[..., 1 + d:1 + 2 * d]
    scale = torch.nn.functional.softplus(raw).clamp(min=1e-2)
    diff = (x[:, :, None, :] - mean[:, None]) / scale[:, None]  # (B, N, C, d)
    log_comp = -0.5 * (diff ** 2).sum(-1) - scale.log().sum(-1)[:, None] - 0.5 * d * np.log(2 * np.pi)
    log_like = torch.logsumexp(log_comp + logit.log_softmax(-1)[:, None], dim=-1)  # (B, N)
    if mask is None:
        return -log_like.mean(1)
    return -(log_like * mask).sum(1) / mask.sum(1).clamp(min=1)
