"""Synthetic stand-ins for the ISBI 2012 EM stack and the Shenzhen chest X-rays.

Both generators write the raw layout of the real dataset (docs/usage.md, "Data sources"),
so every later stage runs unchanged with no network and no mirror. The images are built
to be a real, if easier, segmentation problem: the targets are only partly visible through
texture, distractors (organelles, ribs, opacities), blur and noise. Output is a pure
function of the arguments: the same seed gives byte-identical files (with the same numpy
and scipy on the same kind of CPU; no BLAS and no threads are involved).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from unetflow.io.images import write_png

# EM geometry is in pixels of the 512 px ISBI slices, whatever `size` is: a smaller
# slice shows fewer cells of the same size, so the membrane fraction stays ISBI-like.
_EM_PAD = 56  # Voronoi grid margin around the visible slice, so edge cells are whole
_EM_SPACING = 40.0  # mean distance between cell seeds (px)
_EM_MIN_DIST = 24.0  # no two seeds closer than this at the middle slice (px)
_EM_FLOW_SPEED = 0.5  # std of the smooth drift of the cells per slice (px)
_EM_SEED_SPEED = 0.25  # std of a seed's own drift per slice (px)
_EM_VESICLE = np.float32(2 * np.pi * 1.4**2 * 45.0)  # peak darkening of a vesicle: 45 grey
_EM_REACH = 7  # distances to a membrane are exact up to here (px); the widest half-width is 5
_EM_HALF_WIDTH = 1.9  # mean membrane half-width (px); ISBI-like membrane fraction


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def _check_out(out: Path) -> Path:
    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"out: {out} is not an existing folder")
    if any(out.iterdir()):
        raise ValueError(f"out: {out} must be empty")
    return out


class _SmoothFields:
    """Smooth unit-variance random fields on a (size, size) slice, correlated along z.

    Smoothed white noise on a coarse grid (one node every `scale` pixels) is interpolated
    bilinearly, so a field costs about a millisecond per slice, and uses no BLAS (whose
    threads would only spin on a busy 2-core machine).
    """

    def __init__(
        self,
        rng: np.random.Generator,
        n: int,
        size: int,
        *,
        count: int,
        scale: float,
        z_sigma: float,
    ) -> None:
        g = int(np.ceil((size - 1) / scale)) + 2
        coarse = rng.standard_normal((count, n + 8, g, g))
        coarse = ndi.gaussian_filter(coarse, (0, z_sigma, 1.0, 1.0), mode="nearest")
        coarse = coarse[:, 4 : n + 4]
        self.coarse = (coarse / (coarse.std() + 1e-12)).astype(np.float32)
        pos = np.arange(size) / scale
        self.i0 = pos.astype(int)
        self.f = (pos - self.i0).astype(np.float32)

    def __call__(self, t: int) -> np.ndarray:
        """The fields of slice t, shape (count, size, size)."""
        i0, f = self.i0, self.f
        c = self.coarse[:, t]
        rows = c[:, i0] * (1 - f)[:, None] + c[:, i0 + 1] * f[:, None]
        return rows[:, :, i0] * (1 - f) + rows[:, :, i0 + 1] * f


def _em_seeds(rng: np.random.Generator, n: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeds of the cell tessellation: positions at the middle slice and drift per slice.

    Seeds cover the Voronoi grid plus the distance they drift over the stack, so cells
    flow in and out of view as in a serial section stack. Spacing varies with a smooth
    density field (small axons beside large dendrites) above a hard-core minimum.
    """
    drift = rng.uniform(0.2, 0.6) * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
    margin = (n / 2 + 1) * (np.abs(drift).max() + 3 * (_EM_FLOW_SPEED + _EM_SEED_SPEED))
    lo, hi = -margin, grid + margin
    extent = hi - lo
    target = int(extent**2 / _EM_SPACING**2)
    density = ndi.gaussian_filter(rng.standard_normal((8, 8)), 1.5, mode="wrap")
    density = (density - density.min()) / (np.ptp(density) + 1e-12)
    accepted = np.empty((target, 2))
    count = 0
    for _ in range(60):
        cand = rng.uniform(lo, hi, size=(4 * target, 2))
        node = ((cand - lo) / extent * 7.999).astype(int)
        keep = rng.random(len(cand)) < 0.6 + 0.4 * density[node[:, 0], node[:, 1]]
        for p in cand[keep]:
            if count and np.min(np.sum((accepted[:count] - p) ** 2, axis=1)) < _EM_MIN_DIST**2:
                continue
            accepted[count] = p
            count += 1
            if count == target:
                break
        if count == target:
            break
    seeds = accepted[:count]
    # Neighbouring cells move together (a smooth flow field) and a little on their own,
    # so the pattern shears and cells appear and vanish without tearing the tessellation.
    flow = ndi.gaussian_filter(rng.standard_normal((2, 8, 8)), (0, 1.5, 1.5), mode="wrap")
    flow *= _EM_FLOW_SPEED / (flow.std() + 1e-12)
    at = ((seeds - lo) / extent * 7.0).T
    velocity = drift + np.stack([ndi.map_coordinates(f, at, order=1) for f in flow], axis=1)
    velocity += rng.normal(0.0, _EM_SEED_SPEED, size=seeds.shape)
    return seeds, velocity


def _edge_distance(edge: np.ndarray, reach: int) -> np.ndarray:
    """Euclidean distance (float32) to the nearest True pixel, exact up to `reach` and
    above `reach` beyond it: exact 1-D distances along rows, then a minimum over the
    2*reach+1 nearest rows. Three times faster than a full distance transform."""
    cols = np.arange(edge.shape[1], dtype=np.float32)
    far = np.float32(4 * edge.shape[1])
    left = np.maximum.accumulate(np.where(edge, cols, -far), axis=1)
    right = np.minimum.accumulate(np.where(edge, cols, 2 * far)[:, ::-1], axis=1)[:, ::-1]
    row = np.minimum(np.minimum(cols - left, right - cols), np.float32(reach + 1)) ** 2
    out = row.copy()
    for k in range(1, reach + 1):
        np.minimum(out[k:], row[:-k] + np.float32(k * k), out=out[k:])
        np.minimum(out[:-k], row[k:] + np.float32(k * k), out=out[:-k])
    return np.sqrt(out)


class _Organelles(NamedTuple):
    """Mitochondria-like ellipsoids, one entry per organelle, each riding with one cell."""

    seed: np.ndarray  # index of the cell (seed) it lies in
    r: np.ndarray  # offset from the cell's seed: distance (px) ...
    phi: np.ndarray  # ... and direction
    z: np.ndarray  # centre along the stack (slices)
    zh: np.ndarray  # half-extent along the stack (slices)
    a: np.ndarray  # semi-axes at its centre slice (px)
    b: np.ndarray
    theta: np.ndarray  # orientation in the slice
    val: np.ndarray  # grey value inside


def _em_organelles(rng: np.random.Generator, n: int, n_seeds: int) -> _Organelles:
    """Draw the organelles of an n-slice stack; each exists for a few slices only."""
    n_org = int(n_seeds * (n + 6) / 8)
    org_seed = rng.integers(0, n_seeds, n_org)
    org_r = rng.uniform(0.0, 10.0, n_org)
    org_phi = rng.uniform(0.0, 2 * np.pi, n_org)
    org_z = rng.uniform(-3.0, n + 3.0, n_org)
    org_zh = rng.uniform(1.5, 4.5, n_org)
    org_a = rng.uniform(4.0, 13.0, n_org)
    org_b = org_a * rng.uniform(0.45, 0.85, n_org)
    org_theta = rng.uniform(0.0, np.pi, n_org)
    org_val = rng.uniform(75.0, 115.0, n_org)
    return _Organelles(org_seed, org_r, org_phi, org_z, org_zh, org_a, org_b, org_theta, org_val)


def _em_cells(
    pos: np.ndarray, grid: int, shift: np.ndarray, yy: np.ndarray, xx: np.ndarray
) -> np.ndarray:
    """Cell label (seed index + 1) of every pixel of a slice: the Voronoi tessellation of the
    seeds at `pos`, sampled through the smooth warp `shift` (dy, dx) so that its straight
    edges bend into membrane-like curves."""
    inside = np.all((pos >= 0) & (pos <= grid - 1), axis=1)
    seed_img = np.zeros((grid, grid), np.int32)
    ij = np.rint(pos[inside]).astype(int)
    seed_img[ij[:, 0], ij[:, 1]] = np.flatnonzero(inside) + 1
    near = ndi.distance_transform_edt(seed_img == 0, return_distances=False, return_indices=True)
    voronoi = seed_img[near[0], near[1]]
    dy, dx = shift
    wy = np.clip(np.rint(yy + dy).astype(np.int32) + _EM_PAD, 0, grid - 1)
    wx = np.clip(np.rint(xx + dx).astype(np.int32) + _EM_PAD, 0, grid - 1)
    return voronoi[wy, wx]


def _cell_edges(cells: np.ndarray) -> np.ndarray:
    """True on both pixels of every pair of 4-neighbours that lie in different cells."""
    edge = np.zeros(cells.shape, bool)
    dh = cells[:, 1:] != cells[:, :-1]
    dv = cells[1:, :] != cells[:-1, :]
    edge[:, 1:] |= dh
    edge[:, :-1] |= dh
    edge[1:, :] |= dv
    edge[:-1, :] |= dv
    return edge


def _em_cytoplasm(rng: np.random.Generator, size: int) -> np.ndarray:
    """Cytoplasm grain plus vesicles (small dark dots, half of them in clusters), blurred
    together in one pass; zero-mean, float32."""
    n_dots = size * size // 250
    grain = rng.standard_normal((size, size), dtype=np.float32) * np.float32(40.0)
    centre = rng.integers(0, size, (n_dots // 40 + 1, 2))
    spread = centre[rng.integers(0, len(centre), n_dots // 2)] + rng.normal(0, 10, (n_dots // 2, 2))
    where = np.concatenate([spread.astype(int), rng.integers(0, size, (n_dots - n_dots // 2, 2))])
    where = where[np.all((where >= 0) & (where < size), axis=1)]
    grain[where[:, 0], where[:, 1]] -= rng.uniform(0.4, 1.0, len(where)) * _EM_VESICLE
    return ndi.gaussian_filter(grain, 1.4)


def _add_organelles(
    img: np.ndarray,
    org: _Organelles,
    t: int,
    pos: np.ndarray,
    cells: np.ndarray,
    dist: np.ndarray,
    half_width: np.ndarray,
    yy: np.ndarray,
    xx: np.ndarray,
) -> None:
    """Paint, in place, the cross-sections of the organelles that slice t cuts: each one
    only where it falls well inside its own cell, clear of the membrane."""
    size = img.shape[0]
    for k in np.flatnonzero(np.abs(t - org.z) < org.zh):
        scale = np.sqrt(1.0 - ((t - org.z[k]) / org.zh[k]) ** 2)
        a, b = org.a[k] * scale, org.b[k] * scale
        if b < 1.5:
            continue
        cy = pos[org.seed[k], 0] - _EM_PAD + org.r[k] * np.sin(org.phi[k])
        cx = pos[org.seed[k], 1] - _EM_PAD + org.r[k] * np.cos(org.phi[k])
        ci, cj = int(round(cy)), int(round(cx))
        if not (0 <= ci < size and 0 <= cj < size):
            continue
        if cells[ci, cj] != org.seed[k] + 1 or dist[ci, cj] < _EM_REACH:
            continue
        r = int(np.ceil(a)) + 1
        i0, i1 = max(ci - r, 0), min(ci + r + 1, size)
        j0, j1 = max(cj - r, 0), min(cj + r + 1, size)
        oy, ox = yy[i0:i1, j0:j1] - cy, xx[i0:i1, j0:j1] - cx
        c, s = np.cos(org.theta[k]), np.sin(org.theta[k])
        q = ((ox * c + oy * s) / a) ** 2 + ((oy * c - ox * s) / b) ** 2
        alpha = np.clip((1.0 - q) * 3.0, 0.0, 1.0)
        alpha *= (cells[i0:i1, j0:j1] == org.seed[k] + 1) & (
            dist[i0:i1, j0:j1] > half_width[i0:i1, j0:j1] + 1.0
        )
        rim = 25.0 * np.clip(2.0 * q - 1.0, 0.0, 1.0)  # darker outer membrane
        patch = img[i0:i1, j0:j1]
        inner = org.val[k] + 0.5 * (patch - 150.0) - rim
        img[i0:i1, j0:j1] = patch + (inner - patch) * alpha


def _em_exposure(
    rng: np.random.Generator,
    img: np.ndarray,
    dist: np.ndarray,
    half_width: np.ndarray,
    dark_f: np.ndarray,
) -> np.ndarray:
    """Draw the membranes (dark, with a soft edge and a darkness that varies along them),
    then blur and add shot-like noise; the finished uint8 slice."""
    size = img.shape[0]
    mem_val = np.clip(85.0 + 15.0 * dark_f, 50.0, 125.0)
    soft = np.clip(half_width + 0.7 - dist, 0.0, 1.0)
    img += (mem_val - img) * soft
    img = ndi.gaussian_filter(img, 0.9)
    img += rng.standard_normal((size, size), dtype=np.float32) * (
        np.sqrt(np.clip(img, 1.0, None)) + 4.0
    )
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _em_stack(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One correlated stack of EM-like slices (uint8) and their labels (0 membrane, 255 cell)."""
    grid = size + 2 * _EM_PAD
    seeds, velocity = _em_seeds(rng, n, grid)
    cell_offset = rng.normal(0.0, 12.0, len(seeds) + 1).astype(np.float32)
    org = _em_organelles(rng, n, len(seeds))
    # Along the stack: a warp at two scales (2 fields each), and membrane half-width,
    # membrane darkness and uneven staining of the cytoplasm (3 fields).
    warp = _SmoothFields(rng, n, size, count=2, scale=40.0, z_sigma=3.0)
    wiggle = _SmoothFields(rng, n, size, count=2, scale=16.0, z_sigma=2.0)
    fields = _SmoothFields(rng, n, size, count=3, scale=20.0, z_sigma=2.0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    t_mid = (n - 1) / 2

    images = np.empty((n, size, size), np.uint8)
    labels = np.empty((n, size, size), np.uint8)
    for t in range(n):
        pos = seeds + velocity * (t - t_mid)
        cells = _em_cells(pos, grid, warp(t) * 5.0 + wiggle(t) * 1.5, yy, xx)
        dist = _edge_distance(_cell_edges(cells), _EM_REACH)
        width_f, dark_f, stain_f = fields(t)
        half_width = np.clip(_EM_HALF_WIDTH + 1.0 * width_f, 0.5, _EM_REACH - 2.0)
        img = _em_cytoplasm(rng, size)
        img += 150.0 + cell_offset[cells] + 8.5 * stain_f
        _add_organelles(img, org, t, pos, cells, dist, half_width, yy, xx)
        images[t] = _em_exposure(rng, img, dist, half_width, dark_f)
        labels[t] = np.where(dist <= half_width, 0, 255).astype(np.uint8)
    return images, labels


def generate_synth_em(out: Path, *, n_train: int, n_test: int, size: int, seed: int) -> None:
    """Write an ISBI-2012-like EM dataset into the existing, empty folder `out`.

    Layout: train/images/NN.png, train/labels/NN.png ({0,255}: 0 membrane, 255 cell) and
    test/images/NN.png. Train and test are two separate stacks whose neighbouring slices
    are correlated, because the cell seeds drift slowly from slice to slice.
    """
    n_train = _check_int("n_train", n_train, 1)
    n_test = _check_int("n_test", n_test, 1)
    size = _check_int("size", size, 64)
    seed = _check_int("seed", seed, 0)
    out = _check_out(out)
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)

    train_images, train_labels = _em_stack(np.random.default_rng(train_seq), n_train, size)
    test_images, _ = _em_stack(np.random.default_rng(test_seq), n_test, size)

    for sub in ("train/images", "train/labels", "test/images"):
        (out / sub).mkdir(parents=True)
    width = max(2, len(str(n_train - 1)))
    for i in range(n_train):
        write_png(out / "train/images" / f"{i:0{width}d}.png", train_images[i])
        write_png(out / "train/labels" / f"{i:0{width}d}.png", train_labels[i])
    width = max(2, len(str(n_test - 1)))
    for i in range(n_test):
        write_png(out / "test/images" / f"{i:0{width}d}.png", test_images[i])


# ---------------------------------------------------------------------------------------
# Chest X-rays (PA view). Geometry is relative to the image size; `px` scales 512-px lengths.


def _soft_ellipse(
    yy: np.ndarray,
    xx: np.ndarray,
    cy: float,
    cx: float,
    ry: float,
    rx: float,
    edge: float,
    power: float = 2.0,
) -> np.ndarray:
    """1 inside an axis-aligned (super)ellipse, 0 outside, with a soft rim about `edge`
    pixels wide; power > 2 gives fuller corners (the shoulders of a thorax)."""
    r = (np.abs((yy - cy) / ry) ** power + np.abs((xx - cx) / rx) ** power) ** (1 / power)
    return np.clip((1.0 - r) * (min(ry, rx) / edge) + 0.5, 0.0, 1.0)


def _lung_field(
    rng: np.random.Generator,
    yy: np.ndarray,
    xx: np.ndarray,
    cy: float,
    cx: float,
    ry: float,
    rx: float,
    lateral: int,
) -> np.ndarray:
    """One lung field as a boolean mask: a rounded superellipse, narrow at the apex, flat on
    the medial side, with a diaphragm dome lower laterally and a few low harmonics, so each
    lung gets its own smooth shape. `lateral` is +1 when the lung's outer side is image-right."""
    u = (xx - cx) * (lateral / rx)  # +1 at the lateral edge
    v = (yy - cy) / ry  # -1 at the apex, +1 at the base
    u = u / (0.6 + 0.4 * np.sqrt(np.clip((v + 1) / 2, 0, 1)))
    u = np.where(u < 0, u / rng.uniform(0.7, 0.85), u)
    v = v + rng.uniform(0.08, 0.2) * np.clip(-u, 0, 1) * np.clip(v, 0, None)
    power = rng.uniform(2.2, 2.8)
    rho = (np.abs(u) ** power + np.abs(v) ** power) ** (1 / power)
    phi = np.arctan2(v, u)
    limit = 1.0 + sum(
        rng.uniform(0.0, 0.04) * np.cos(k * phi + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)
    )
    return rho <= limit


_SIDES = {-1: "right", 1: "left"}  # image left is the patient's right (PA view)


def _findings(rng: np.random.Generator, lesions: list[tuple[int, str]]) -> str:
    """A short Shenzhen-style reading from where the opacities are."""
    sides = sorted({side for side, _ in lesions})
    fields = sorted({field for _, field in lesions})
    prefix = "secondary PTB" if rng.random() < 0.3 else "PTB"
    if len(sides) == 2:
        where = "bilateral"
        text = rng.choice(
            [f"bilateral {prefix}", f"Bilateral {prefix}", f"{prefix} in the bilateral upper field"]
            if fields == ["upper"]
            else [f"bilateral {prefix}", f"Bilateral {prefix}"]
        )
    else:
        where = _SIDES[sides[0]]
        text = rng.choice(
            [f"{where.capitalize()} {prefix}", f"{where} {prefix}"]
            + [f"{prefix} in the {where} {field} field" for field in fields]
        )
    extra = rng.random()
    if extra < 0.1:
        text = "STB"
    elif extra < 0.25:
        other = where if where != "bilateral" else _SIDES[int(rng.choice([-1, 1]))]
        text = (
            f"{text},{other} {rng.choice(['pleurisy', 'pleural thickening', 'pleural effusion'])}"
        )
    return str(text)


class _Chest(NamedTuple):
    """The anatomy of one synthetic chest: soft masks (1 inside) and where the lungs sit."""

    tcx: float  # the midline (column of the thorax centre)
    thorax: np.ndarray
    mediastinum: np.ndarray  # spine and great vessels
    heart: np.ndarray
    lungs_geo: dict[int, tuple[float, float, float, float]]  # side -> (cy, cx, ry, rx)


def _lung_geometry(
    rng: np.random.Generator, size: int, top: float, tcx: float, trx: float, gap: float
) -> dict[int, tuple[float, float, float, float]]:
    """Centre and radii (cy, cx, ry, rx) of each lung field, each its own size and position,
    keyed by side: -1 is image left, the patient's right lung."""
    apex = top + size * rng.uniform(0.07, 0.12)
    lungs_geo = {}
    for side in (-1, 1):
        rx = size * rng.uniform(0.15, 0.19)
        rx = min(rx, (trx * 0.92 - gap) / 2)
        ry = size * rng.uniform(0.25, 0.31)
        cx = tcx + side * (gap + rx * rng.uniform(0.85, 1.0))
        cy = apex + ry + size * rng.normal(0, 0.01)
        lungs_geo[side] = (cy, cx, ry, rx)
    return lungs_geo


def _chest(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int, px: float
) -> _Chest:
    """Draw the thorax, the mediastinum, the lung fields and the heart, which sits low on
    the image-right side and so cuts into the patient's left lung."""
    tcx = size * (0.5 + rng.normal(0, 0.015))
    top = size * rng.uniform(0.03, 0.1)
    trx, try_ = size * rng.uniform(0.42, 0.48), size * rng.uniform(0.55, 0.65)
    thorax = _soft_ellipse(yy, xx, top + try_, tcx, try_, trx, 10 * px, rng.uniform(2.3, 3.0))
    gap = size * rng.uniform(0.035, 0.06)  # half the width of the mediastinum
    mediastinum = np.clip(1.2 - np.abs(xx - tcx) / (1.1 * gap), 0.0, 1.0)
    lungs_geo = _lung_geometry(rng, size, top, tcx, trx, gap)
    base = lungs_geo[1][0] + lungs_geo[1][2]
    hry, hrx = size * rng.uniform(0.09, 0.12), size * rng.uniform(0.13, 0.17)
    heart = _soft_ellipse(
        yy,
        xx,
        base - hry * rng.uniform(0.4, 0.8),
        tcx + size * rng.uniform(0.04, 0.08),
        hry,
        hrx,
        5 * px,
    )
    return _Chest(tcx, thorax, mediastinum, heart, lungs_geo)


def _lung_mask(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, chest: _Chest
) -> np.ndarray:
    """The boolean lung mask: each lung field, inside the thorax and outside the heart, kept
    as one piece."""
    size = yy.shape[0]
    mask = np.zeros((size, size), bool)
    room = (chest.heart < 0.5) & (chest.thorax >= 1.0)
    for side, (cy, cx, ry, rx) in chest.lungs_geo.items():
        i0, i1 = max(int(cy - ry * 1.3), 0), min(int(cy + ry * 1.3) + 1, size)
        j0, j1 = max(int(cx - rx * 1.5), 0), min(int(cx + rx * 1.5) + 1, size)
        box = (slice(i0, i1), slice(j0, j1))
        lung = _lung_field(rng, yy[box], xx[box], cy, cx, ry, rx, side) & room[box]
        parts, count = ndi.label(lung)
        if count > 1:  # the heart may cut off a sliver: keep the lung itself, one piece
            lung = parts == 1 + np.argmax(np.bincount(parts.ravel())[1:])
        mask[box] |= lung
    return mask


def _cxr_densities(
    rng: np.random.Generator, chest: _Chest, lungs: np.ndarray, size: int, px: float
) -> np.ndarray:
    """The grey levels before ribs and lesions: background, soft tissue, the brighter
    mediastinum and heart, and the darker lungs with their vessel texture."""
    background = rng.uniform(5, 30)
    soft_tissue = rng.uniform(150, 185)
    img = background + (soft_tissue - background) * chest.thorax
    img += chest.thorax * (
        rng.uniform(15, 30) * chest.mediastinum + rng.uniform(15, 30) * chest.heart
    )
    img -= rng.uniform(50, 80) * lungs
    vessels = ndi.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), 3 * px)
    img += vessels * (50.0 * px) * lungs
    return img


def _add_ribs(
    rng: np.random.Generator,
    img: np.ndarray,
    yy: np.ndarray,
    xx: np.ndarray,
    chest: _Chest,
    lungs: np.ndarray,
) -> None:
    """Add, in place, the ribs: periodic bright bands, bending down laterally, strongest
    over the lungs."""
    size = img.shape[0]
    dx = np.abs(xx - chest.tcx)
    phase = (yy - rng.uniform(0.8, 1.4) * dx**2 / size - rng.uniform(-0.1, 0.15) * dx) / (
        size * rng.uniform(0.055, 0.075)
    )
    ribs = ((1 + np.cos(2 * np.pi * (phase + rng.uniform(0, 1)))) / 2) ** 8
    img += rng.uniform(15, 30) * ribs * (0.25 + 0.75 * lungs) * chest.thorax


def _add_lesions(
    rng: np.random.Generator,
    img: np.ndarray,
    yy: np.ndarray,
    xx: np.ndarray,
    chest: _Chest,
    mask: np.ndarray,
    lungs: np.ndarray,
    px: float,
) -> str:
    """Add, in place, one to four mottled TB-like opacities inside the lungs, mostly in the
    upper fields; return the findings text that reads them."""
    size = img.shape[0]
    lesions = []
    rows, cols = np.nonzero(mask)
    upper = np.flatnonzero(rows < np.percentile(rows, 45))  # TB favours the upper fields
    mottle = ndi.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), 2 * px)
    mottle = 0.6 + 0.4 * np.clip(mottle * (3 * px) + 0.5, 0, 1)
    for _ in range(int(rng.integers(1, 5))):
        k = int(upper[rng.integers(len(upper))] if rng.random() < 0.7 else rng.integers(len(rows)))
        r, c = float(rows[k]), float(cols[k])
        sy, sx = size * rng.uniform(0.015, 0.05, 2)
        i0, i1 = max(int(r - 3 * sy), 0), min(int(r + 3 * sy) + 1, size)
        j0, j1 = max(int(c - 3 * sx), 0), min(int(c + 3 * sx) + 1, size)
        box = (slice(i0, i1), slice(j0, j1))
        blob = np.exp(-0.5 * (((yy[box] - r) / sy) ** 2 + ((xx[box] - c) / sx) ** 2))
        img[box] += rng.uniform(25, 55) * blob * mottle[box] * lungs[box]
        side = -1 if c < chest.tcx else 1
        lesions.append((side, "upper" if r < chest.lungs_geo[side][0] else "lower"))
    return _findings(rng, lesions)


def _cxr_exposure(rng: np.random.Generator, img: np.ndarray, px: float) -> np.ndarray:
    """Blur, noise and a random film gamma: the finished uint8 radiograph."""
    size = img.shape[0]
    img = ndi.gaussian_filter(img, 1.2 * px)
    img += rng.standard_normal((size, size), dtype=np.float32) * rng.uniform(3, 6)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    gamma = np.round(255.0 * (np.arange(256) / 255.0) ** rng.uniform(0.85, 1.15))
    return gamma.astype(np.uint8)[image]


def _cxr_image(
    rng: np.random.Generator, size: int, abnormal: bool
) -> tuple[np.ndarray, np.ndarray, str]:
    """One chest X-ray (uint8), its lung mask (0/255) and its findings text."""
    px = size / 512.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    chest = _chest(rng, yy, xx, size, px)
    mask = _lung_mask(rng, yy, xx, chest)
    lungs = ndi.gaussian_filter(mask.astype(np.float32), 2.5 * px)
    img = _cxr_densities(rng, chest, lungs, size, px)
    _add_ribs(rng, img, yy, xx, chest, lungs)
    findings = "normal"
    if abnormal:
        findings = _add_lesions(rng, img, yy, xx, chest, mask, lungs, px)
    return _cxr_exposure(rng, img, px), np.where(mask, 255, 0).astype(np.uint8), findings


def generate_synth_cxr(out: Path, *, n_images: int, n_unmasked: int, size: int, seed: int) -> None:
    """Write a Shenzhen-like chest X-ray dataset into the existing, empty folder `out`.

    Layout: CXR_png/CHNCXR_XXXX_Y.png (Y: 0 normal, 1 abnormal), masks/CHNCXR_XXXX_Y_mask.png
    (0 background, 255 lung) for all but `n_unmasked` images (as the real set has images
    without masks), and shenzhen_metadata.csv (study_id,sex,age,findings).
    """
    n_images = _check_int("n_images", n_images, 1)
    n_unmasked = _check_int("n_unmasked", n_unmasked, 0)
    if n_unmasked >= n_images:
        raise ValueError(f"n_unmasked: expected 0 <= n_unmasked < n_images, got {n_unmasked}")
    size = _check_int("size", size, 64)
    seed = _check_int("seed", seed, 0)
    out = _check_out(out)
    meta_seq, *image_seqs = np.random.SeedSequence(seed).spawn(n_images + 1)
    meta_rng = np.random.default_rng(meta_seq)

    abnormal = meta_rng.random(n_images) < 0.5
    if n_images >= 2 and abnormal.all() == abnormal.any():  # keep both classes present
        abnormal[meta_rng.integers(n_images)] = not abnormal[0]
    unmasked = set(meta_rng.choice(n_images, size=n_unmasked, replace=False).tolist())
    sex = np.where(meta_rng.random(n_images) < 0.7, "Male", "Female")
    age = np.clip(np.rint(meta_rng.normal(40, 15, n_images)), 1, 89).astype(int)

    (out / "CXR_png").mkdir()
    (out / "masks").mkdir()
    width = max(4, len(str(n_images)))
    rows = []
    for i in range(n_images):
        label = int(abnormal[i])
        stem = f"CHNCXR_{i + 1:0{width}d}_{label}"
        image, mask, findings = _cxr_image(np.random.default_rng(image_seqs[i]), size, bool(label))
        write_png(out / "CXR_png" / f"{stem}.png", image)
        if i not in unmasked:
            write_png(out / "masks" / f"{stem}_mask.png", mask)
        rows.append([f"{stem}.png", str(sex[i]), int(age[i]), findings])
    with open(out / "shenzhen_metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["study_id", "sex", "age", "findings"])
        writer.writerows(rows)
