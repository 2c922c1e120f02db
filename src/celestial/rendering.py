"""The default data set: synthetic renders of celestial bodies (the `generate` stage).

It writes the image-folder layout that `celestial.image_folder` reads, like any
user-supplied data set: `<root>/<ClassName>/<ClassName>_<n>.jpg`.

The generator draws each body as a lit sphere with its own look (bands and rings,
clouds, craters, ice, colour) and varies everything that should not identify the class:
light direction and phase, spin and tilt, size and position (sometimes cut by the frame),
colour and exposure, sensor noise, blur and background stars. Bodies that look alike in
reality look alike here too (Uranus/Neptune, Mercury/Moon, Venus/Saturn), so the task
is not solvable from mean colour alone. Every image has its own random generator seeded
from (seed, class, index): same seed and params -> byte-identical files, and generating
fewer images gives a prefix of the same images.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

CLASSES = (
    "Earth", "Jupiter", "Mars", "Mercury", "Moon",
    "Neptune", "Pluto", "Saturn", "Uranus", "Venus",
)  # fmt: skip
JPEG_QUALITY = 92


def _noise(
    p: tuple[np.ndarray, ...],
    rng: np.random.Generator,
    freq: float,
    octaves: int = 3,
    waves: int = 6,
) -> np.ndarray:
    """Smooth 3-D noise on the sphere: a sum of random plane waves, roughly in [-1, 1].

    Evaluated on body-frame coordinates, so features stick to the surface when it spins.
    """
    pts = np.stack(p, axis=-1).astype(np.float32)  # float32: twice as fast, plenty for noise
    out = np.zeros(pts.shape[:-1], dtype=np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        dirs = rng.normal(size=(waves, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        phases = rng.uniform(0, 2 * np.pi, size=waves)
        arg = freq * (pts @ dirs.T.astype(np.float32)) + phases.astype(np.float32)
        out += np.float32(amp) * np.sin(arg).sum(axis=-1)
        total += amp * np.sqrt(waves / 2)
        amp *= 0.5
        freq *= 2.1
    return out.astype(np.float64) / total


def _craters(
    p: tuple[np.ndarray, ...], rng: np.random.Generator, count: int, size: tuple[float, float]
) -> np.ndarray:
    """Multiplicative shading of `count` craters: dark floors, bright rims."""
    centers = rng.normal(size=(count, 3))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    radii = rng.uniform(*size, size=count)
    # Compare cosines instead of angles (no arccos): angle < k * r  <=>  dot > cos(k * r).
    dots = np.stack(p, axis=-1) @ centers.T
    floors = (dots > np.cos(0.85 * radii)).sum(axis=-1)
    rims = ((dots > np.cos(1.1 * radii)).sum(axis=-1)) - floors
    return 0.72**floors * 1.25**rims


def _mix(a, b, t):
    """Blend colours a and b (RGB triples) with weight map t in [0, 1] -> (H, W, 3)."""
    t = np.clip(t, 0, 1)[..., None]
    return np.asarray(a) * (1 - t) + np.asarray(b) * t


def _earth(p, lat, rng):
    # Mostly ocean (~70 %), so the disc reads as blue with green/brown land, not as grey.
    land = _noise(p, rng, 4.5, 4)
    col = _mix((0.05, 0.2, 0.52), (0.2, 0.5, 0.12), (land + 0.12) * 8)
    desert = (_noise(p, rng, 4) - 0.3) * 4 * (land > -0.12)
    col = _mix(col, (0.55, 0.44, 0.27), desert)
    col = _mix(col, (0.92, 0.94, 0.96), (np.abs(lat) - 1.2) * 6)  # polar ice
    # Thin, patchy clouds: enough to be Earth, too few to turn it into a white ball.
    clouds = _noise(p, rng, 9, 3)
    return _mix(col, (0.95, 0.95, 0.97), (clouds - 0.6) * 3 * rng.uniform(0.6, 1.0))


def _jupiter(p, lat, rng):
    # Belts at fixed latitudes (as on the real planet), so every Jupiter shares the
    # same stripe pattern; turbulence only wiggles their edges.
    # cos: a bright equatorial zone between the two dark main belts (NEB, SEB).
    turb = _noise(p, rng, 4, 3)
    belts = 0.5 - 0.8 * np.cos(lat * 8 + 0.5 * turb + rng.uniform(-0.3, 0.3))
    col = _mix((0.96, 0.92, 0.82), (0.74, 0.42, 0.22), belts)
    # Great Red Spot, when it faces us
    x, y, _ = p
    spot = ((x - 0.55) / 0.28) ** 2 + ((y + 0.35) / 0.14) ** 2
    return _mix(col, (0.75, 0.32, 0.2), (1 - spot) * 2)


def _saturn(p, lat, rng):
    bands = np.sin(lat * rng.uniform(6, 10) + 0.4 * _noise(p, rng, 3, 2))
    return _mix((0.86, 0.77, 0.55), (0.74, 0.64, 0.43), bands * 0.5 + 0.5)


def _mars(p, lat, rng):
    dark = _noise(p, rng, 3, 4)
    col = _mix((0.76, 0.4, 0.22), (0.42, 0.22, 0.13), (dark - 0.05) * 4)
    return _mix(col, (0.93, 0.9, 0.88), (np.abs(lat) - 1.3) * 8)


def _mercury(p, lat, rng):
    # Slightly warm, evenly bright and densely cratered, without large dark plains:
    # the cues that tell it from the Moon, and they are subtle (the two stay confusable).
    base = _mix((0.52, 0.5, 0.47), (0.6, 0.58, 0.55), _noise(p, rng, 4, 3) + 0.5)
    return base * _craters(p, rng, 60, (0.05, 0.16))[..., None]


def _moon(p, lat, rng):
    # Neutral grey with dark maria (large smooth patches) and fewer, bigger craters.
    # Tidally locked: it always shows us the same maria, so they come from a fixed
    # generator (the craters still vary), and render() keeps its spin to a small libration.
    maria = _noise(p, np.random.default_rng(1969), 2.2, 3)
    base = _mix((0.76, 0.76, 0.75), (0.26, 0.26, 0.27), (maria - 0.15) * 5)
    return base * _craters(p, rng, 14, (0.06, 0.22))[..., None]


def _venus(p, lat, rng):
    swirl = _noise(p, rng, 2.5, 3) + 0.4 * np.sin(lat * 4)
    return _mix((0.96, 0.91, 0.72), (0.86, 0.77, 0.55), swirl * 0.8 + 0.5)


# The ice giants share one palette: each image picks its hue between pale cyan and deep
# azure, Uranus from the cyan end, Neptune from the blue end, with an overlap in the
# middle where (as in real, processed photos) only the faint features tell them apart.
ICE_CYAN, ICE_BLUE = np.array([0.62, 0.86, 0.9]), np.array([0.26, 0.45, 0.86])


def _ice_colour(rng, lo, hi):
    return _mix(ICE_CYAN, ICE_BLUE, rng.uniform(lo, hi))


def _uranus(p, lat, rng):
    base = _ice_colour(rng, 0.0, 0.5)
    haze = 0.06 * _noise(p, rng, 2, 2)
    return _mix(base, base * 1.1, np.abs(lat) / 1.57 + haze)  # brighter polar hood


def _neptune(p, lat, rng):
    base = _ice_colour(rng, 0.55, 1.0)
    bands = 0.5 + 0.5 * np.sin(lat * rng.uniform(5, 8) + 0.6 * _noise(p, rng, 3, 2))
    col = _mix(base * 0.9, base * 1.05, bands)
    x, y, _ = p
    spot = ((x + 0.4) / 0.25) ** 2 + ((y - 0.3) / 0.13) ** 2  # Great Dark Spot
    col = _mix(col, base * 0.5, (1 - spot) * 2)
    streaks = _noise(p, rng, 9, 2)  # small bright methane clouds
    return _mix(col, (0.85, 0.9, 0.97), (streaks - 0.75) * 3)


def _pluto(p, lat, rng):
    # Greyish tan with dark red-brown patches (Cthulhu): duller than Jupiter's belts,
    # blotchy rather than striped.
    col = _mix((0.76, 0.68, 0.58), (0.42, 0.22, 0.16), (_noise(p, rng, 2.5, 3) + 0.25) * 3)
    x, y, _ = p
    heart = (x / 0.5) ** 2 + ((y - 0.1) / 0.42) ** 2  # the bright "heart"
    return _mix(col, (0.96, 0.92, 0.86), (1 - heart) * 3)


TEXTURES: dict[str, Callable] = {
    "Earth": _earth, "Jupiter": _jupiter, "Mars": _mars, "Mercury": _mercury,
    "Moon": _moon, "Neptune": _neptune, "Pluto": _pluto, "Saturn": _saturn,
    "Uranus": _uranus, "Venus": _venus,
}  # fmt: skip
GAS_GIANTS = {"Jupiter", "Saturn", "Uranus", "Neptune", "Venus"}  # limb-darkened, soft edge


def render(class_name: str, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """Render one image of `class_name`: float RGB array (size, size, 3) in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5

    # Background: dark sky, then stars drawn as small Gaussian dots (local patches only).
    img = np.zeros((size, size, 3)) + rng.uniform(0.0, 0.05)
    n_stars = int(rng.integers(0, 60))
    sx = rng.integers(0, size, n_stars)
    sy = rng.integers(0, size, n_stars)
    colour = rng.uniform(0.2, 1.0, (n_stars, 1)) * rng.uniform(0.8, 1.0, (n_stars, 3))
    np.add.at(img, (sy, sx), colour)
    halo = rng.random(n_stars) < 0.3  # a few bright stars bleed into their neighbours
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        np.add.at(img, ((sy[halo] + dy) % size, (sx[halo] + dx) % size), colour[halo] * 0.35)

    # Geometry: size, position (sometimes cut by the frame), tilt and spin. The ranges are
    # moderate on purpose: the model is a pixel MLP trained on ~1200 images, and wider
    # ones made the disc's position, not the body, the main difference between images.
    ringed = class_name == "Saturn"
    radius = size * (rng.uniform(0.21, 0.27) if ringed else rng.uniform(0.31, 0.42))
    if rng.random() < 0.08:  # partial crop: the body runs off the frame
        cx, cy = size / 2 + rng.choice([-1, 1], 2) * rng.uniform(0.12, 0.25, 2) * size
    else:
        cx, cy = size / 2 + rng.uniform(-0.05, 0.05, 2) * size
    tilt = rng.uniform(-0.6, 0.6)
    spin = rng.uniform(0, 2 * np.pi)
    if class_name == "Moon":
        spin = (spin - np.pi) * 0.05  # libration: the same face, give or take ~9 degrees
    # Light from the front half-space, up to a thick crescent (thin ones hide the body).
    light = np.array([rng.uniform(-1, 1), rng.uniform(-0.8, 0.8), rng.uniform(0.5, 1.5)])
    light /= np.linalg.norm(light)

    u0, v0 = (xx - cx) / radius, (yy - cy) / radius
    u = np.cos(tilt) * u0 + np.sin(tilt) * v0  # tilted frame: v runs along the polar axis
    v = -np.sin(tilt) * u0 + np.cos(tilt) * v0
    dist = np.sqrt(u**2 + v**2)
    edge = np.clip((1 - dist) * radius + 0.5, 0, 1)  # anti-aliased disc coverage
    on = edge > 0  # shade only the pixels the body covers (most of the cost)

    z = np.sqrt(np.clip(1 - dist[on] ** 2, 0, 1))
    uo, vo = u[on], v[on]
    body_frame = (np.cos(spin) * uo + np.sin(spin) * z, -vo, -np.sin(spin) * uo + np.cos(spin) * z)
    lat = np.arcsin(np.clip(-vo, -1, 1))
    albedo = TEXTURES[class_name](body_frame, lat, rng)
    # Lambert shading with the light in the image frame (normal = (u0, v0, z)).
    lambert = np.clip(u0[on] * light[0] + v0[on] * light[1] + z * light[2], 0, 1)
    shade = 0.03 + 0.97 * lambert
    if class_name in GAS_GIANTS:
        shade = shade * (0.55 + 0.45 * z)  # limb darkening of a thick atmosphere
    alpha = edge[on][:, None]
    img[on] = img[on] * (1 - alpha) + albedo * shade[:, None] * alpha

    if ringed:
        ratio = rng.uniform(0.12, 0.45)  # ring opening (inclination seen from here)
        rho = np.sqrt(u**2 + (v / ratio) ** 2)
        ring = ((rho > 1.25) & (rho < 2.25)).astype(np.float64)
        ring *= np.where((rho > 1.85) & (rho < 1.95), 0.15, 1.0)  # Cassini division
        ring *= 0.55 + 0.45 * np.sin(rho * 23)  # ringlets
        ring[(v < 0) & (dist < 1)] = 0.0  # the far half is hidden behind the planet
        ring_col = np.array([0.82, 0.74, 0.56]) * (0.25 + 0.75 * max(light[2], 0.2))
        img = img * (1 - ring[..., None]) + ring_col * ring[..., None]

    # Camera: exposure and white-balance jitter.
    img = img * rng.uniform(0.75, 1.25) * rng.normal(1.0, 0.07, 3)
    return np.clip(img, 0, 1)


def generate_image(
    class_name: str, class_index: int, index: int, seed: int, size: int = 128
) -> Image.Image:
    """The `index`-th image of a class, as a PIL RGB image (deterministic)."""
    rng = np.random.default_rng([seed, class_index, index])
    arr = render(class_name, rng, size)
    img = Image.fromarray((arr * 255 + 0.5).astype(np.uint8), mode="RGB")
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.3)))
    noisy = np.asarray(img, dtype=np.float64) + rng.normal(0, rng.uniform(0, 8), (size, size, 3))
    return Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8), mode="RGB")


def _write_one(job: tuple[str, int, int, int, int, str]) -> str:
    name, class_index, n, seed, size, path = job
    img = generate_image(name, class_index, n, seed, size)
    # Plain baseline JPEG, no EXIF or timestamps: the bytes depend on the pixels only.
    img.save(path, format="JPEG", quality=JPEG_QUALITY, optimize=False)
    return path


def generate_dataset(
    out_dir: str | Path,
    images_per_class: int,
    image_size: int = 128,
    seed: int = 42,
    classes: tuple[str, ...] = CLASSES,
    workers: int | None = None,
) -> list[Path]:
    """Write `<out_dir>/<Class>/<Class>_<n>.jpg` (n from 1); returns the written paths.

    The output folder is emptied first so no stale image from a bigger run survives.
    Images are independent (own seed each), so they are rendered in parallel processes;
    the bytes do not depend on the number of workers or the completion order.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    jobs = []
    for class_index, name in enumerate(classes):
        (out_dir / name).mkdir(parents=True)
        for n in range(1, images_per_class + 1):
            path = out_dir / name / f"{name}_{n}.jpg"
            jobs.append((name, class_index, n, seed, image_size, str(path)))
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(jobs) > 50:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_write_one, jobs, chunksize=16))
    else:
        for job in jobs:
            _write_one(job)
    return [Path(job[-1]) for job in jobs]
