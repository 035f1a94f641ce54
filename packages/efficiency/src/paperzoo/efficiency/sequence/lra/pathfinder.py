"""LRA Pathfinder and Path-X: are the two marker dots joined by one dashed curve? Read as a flat pixel sequence.

Long Range Arena, Tay et al., "Long Range Arena: A Benchmark for Efficient Transformers", arXiv:2011.04006,
https://arxiv.org/abs/2011.04006; the images follow the Pathfinder challenge (Linsley et al. 2018; Kim et al.,
"Disentangling neural mechanisms for perceptual grouping", ICLR 2020), whose generator LRA ran at 32, 64, 128 (Path-X)
and 256 pixels.

What is implemented: a procedural, vectorised generator of the same kind of image.
- Every image holds two "contour" snakes of `contour_length` paddles and `num_distractors` shorter distractor snakes
  of `contour_length // 3` paddles (the release's `distractor_length`). A snake is a smooth random curve: paddles of
  equal length whose direction turns by at most `max_turn` radians from one paddle to the next; each paddle is drawn
  as a dash with a gap before the next (the release's `paddle_margin`), so a snake is a dashed curve.
- Positive (label 1): both markers (filled disks of `marker_radius`) sit on the two ends of the first contour snake.
  Negative (label 0): they sit on ends of two different snakes, choosing the pair of ends whose distance is closest
  to the first snake's own end-to-end distance, so the distance between the markers does not give the label away.
- Snakes keep apart: a snake is redrawn while it passes closer than `separation` pixels to one already placed, and a
  finished image is kept only if, joining pixels at most `bridge` apart (Chebyshev distance, enough to jump the
  dash gaps), every snake is exactly one connected component. So a positive's markers are joined by a path of lit
  pixels with steps of at most `bridge`, and a negative's are not (tests check this with a flood fill).
- Geometry scales with the resolution (paddle 2 px + gap 1 px at 32, as the release's 32-pixel settings: paddle
  length 2, margin 1, marker radius 1.5); at 64 and 128 everything is 2x and 4x larger, so the sequence gets 4x and
  16x longer while the drawing stays the same. `PathXDataModule` is the 128x128 (16384-token) variant with few
  samples.
- Exactly half of each split is positive; splits are drawn from independent seeds, and no image repeats across
  splits. Tokens are the grey level + 1 (0-255 -> 1-256; 0 stays padding), row-major, so vocab_size is 257.
- `path=`: a release directory such as `pathfinder32/curv_contour_length_14`, holding `metadata/*.npy` (text lines
  `<subdir> <file> <index> <label> ...`) and the PNGs they name (`imgs/<n>/sample_<i>.png`); there is no split in
  the release, so the samples are shuffled with `seed` and cut by `split_fractions` (LRA used 80/10/10).

Deviations: the paddles are 1-pixel lines without the release's anti-aliasing (grey levels are 0 and 255 only);
snakes are random-walk curves rather than the release's paddle-by-paddle placement with collision checks, and the
default `contour_length` is 8 with 2 distractors (the release's hardest level, `curv_contour_length_14`, is
`contour_length=14`, `num_distractors=5`) so the snakes fit a 32x32 frame without touching.
"""

import math
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from paperzoo.core.errors import DataError, require
from paperzoo.efficiency.sequence.lra.base import SPLITS, SequenceDataModule, Split

#: geometry at 32x32 in pixels (scaled by resolution / 32): paddle (dash) length, gap between dashes, marker radius.
PADDLE, GAP, MARKER_RADIUS = 2.0, 1.0, 1.5
_SAMPLE_STEP = 0.25  # pixels between the points that rasterise a dash


def pathfinder_geometry(resolution: int) -> dict[str, float]:
    """Paddle, gap, marker radius, bridge (Chebyshev pixel step that jumps a gap) and snake separation in pixels."""
    scale = resolution / 32
    gap = GAP * scale
    bridge = math.floor(gap) + 1  # floor-rasterised points at most `gap` apart differ by at most this per axis
    return {
        "paddle": PADDLE * scale,
        "gap": gap,
        "marker_radius": MARKER_RADIUS * scale,
        "bridge": bridge,
        "separation": math.sqrt(2) * (bridge + 1),
    }


def _draw_snakes(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    segments: int,
    step: float,
    max_turn: float,
    low: float,
    high: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Random smooth curves of `segments` steps, each placed uniformly among the translations that keep it inside
    [low, high]^2. -> points [*shape, segments + 1, 2] (x, y), fits [*shape] (False: the curve is wider than the
    frame; its points are meaningless)"""
    angle = rng.uniform(0, 2 * np.pi, size=(*shape, 1)) + np.cumsum(
        rng.uniform(-max_turn, max_turn, (*shape, segments)), -1
    )
    moves = step * np.stack([np.cos(angle), np.sin(angle)], -1)  # [..., S, 2]
    points = np.concatenate([np.zeros((*shape, 1, 2)), np.cumsum(moves, -2)], -2)
    lo, hi = points.min(-2), points.max(-2)  # [..., 2]
    fits = ((hi - lo) <= high - low).all(-1)
    offset = rng.uniform(low - lo, np.maximum(high - hi, low - lo))  # [..., 2]
    return points + offset[..., None, :], fits


def _dense(points: np.ndarray, per_segment: int) -> np.ndarray:
    """[..., S + 1, 2] -> [..., S * per_segment + 1, 2] points along the polyline."""
    t = np.arange(per_segment) / per_segment
    a, b = points[..., :-1, None, :], points[..., 1:, None, :]
    inner = (a + (b - a) * t[:, None]).reshape(*points.shape[:-2], -1, 2)
    return np.concatenate([inner, points[..., -1:, :]], -2)


def generate_pathfinder(
    n: int,
    resolution: int = 32,
    contour_length: int = 8,
    num_distractors: int = 2,
    max_turn: float = math.pi / 5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n Pathfinder images (see the module docstring), exactly half positive, in random order.

    Returns:
        images [n, resolution, resolution] uint8 (0 or 255), labels [n] int64 (1 = markers joined),
        markers [n, 2, 2] float (x, y) of the two marker centres.
    """
    require(resolution >= 16, f"resolution must be at least 16, got {resolution}")
    require(contour_length >= 3, f"contour_length must be at least 3, got {contour_length}")
    require(num_distractors >= 0, f"num_distractors must be >= 0, got {num_distractors}")
    geo = pathfinder_geometry(resolution)
    rng = np.random.default_rng(seed)
    step = geo["paddle"] + geo["gap"]
    low, high = geo["marker_radius"] + 1.0, resolution - geo["marker_radius"] - 1.0
    lengths = [contour_length] * 2 + [max(contour_length // 3, 1)] * num_distractors
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    images = np.zeros((n, resolution, resolution), dtype=np.uint8)
    markers = np.zeros((n, 2, 2))
    todo = np.arange(n)
    per = max(2, math.ceil(step / 0.5))  # separation checks on points about half a pixel apart
    tries = 8  # candidate snakes per image and round
    reach = math.ceil(geo["separation"])
    grid = np.arange(-reach, reach + 1)
    disk = grid[:, None] ** 2 + grid[None, :] ** 2 <= geo["separation"] ** 2  # [2r+1, 2r+1]
    for _ in range(200):
        m = len(todo)
        snakes: list[np.ndarray] = []  # each [m, S_p + 1, 2]
        ok = np.ones(m, dtype=bool)
        occupied = np.zeros((m, resolution, resolution), dtype=bool)  # pixels of the snakes placed so far
        for segments in lengths:
            snake = np.empty((m, segments + 1, 2))
            pending = np.arange(m)
            # pixels closer than `separation` to a placed snake pixel, image by image
            forbidden = ndimage.binary_dilation(occupied, structure=disk[None]) if snakes else occupied
            for _ in range(8):
                cand, fine = _draw_snakes(rng, (len(pending), tries), segments, step, max_turn, low, high)
                if snakes:
                    xy = np.clip(np.floor(_dense(cand, per)).astype(int), 0, resolution - 1)  # [k, C, P, 2]
                    fine &= ~forbidden[pending[:, None, None], xy[..., 1], xy[..., 0]].any(-1)
                found = fine.any(1)
                pick = fine.argmax(1)
                snake[pending[found]] = cand[found, pick[found]]
                pending = pending[~found]
                if not len(pending):
                    break
            ok[pending] = False
            xy = np.clip(np.floor(_dense(snake[ok], per)).astype(int), 0, resolution - 1)
            occupied[np.flatnonzero(ok)[:, None], xy[..., 1], xy[..., 0]] = True
            snakes.append(snake)
        rows = np.flatnonzero(ok)
        kept = _render(images, markers, todo, rows, snakes, labels, geo, rng)
        done = np.zeros(m, dtype=bool)
        done[rows[kept]] = True
        images[todo[~done]] = 0
        todo = todo[~done]
        if not len(todo):
            return images, labels.astype(np.int64), markers
    raise DataError("Pathfinder: too many rejected images; lower contour_length or num_distractors")


def _render(images, markers, todo, rows, snakes, labels, geo, rng) -> np.ndarray:
    """Draw rows `rows` (indices into `todo`) and return which of them pass the component check."""
    if not len(rows):
        return np.zeros(0, dtype=bool)
    resolution = images.shape[-1]
    index = todo[rows]
    chosen = [s[rows] for s in snakes]
    # dashes: on each paddle step, a dash of `paddle` pixels centred in the step, the gap split around it
    frac = geo["gap"] / 2 / (geo["paddle"] + geo["gap"])
    samples = max(2, math.ceil(geo["paddle"] / _SAMPLE_STEP) + 1)
    t = frac + (1 - 2 * frac) * np.linspace(0, 1, samples)
    pixels = []
    for s in chosen:
        a, b = s[:, :-1, None], s[:, 1:, None]  # [k, S, 1, 2]
        pixels.append((a + (b - a) * t[:, None]).reshape(len(rows), -1, 2))
    # markers: positives on the two ends of snake 0; negatives on the ends of snake 0 and another snake
    k = len(rows)
    rows_k = np.arange(k)
    first = chosen[0]
    target = np.linalg.norm(first[:, -1] - first[:, 0], axis=-1)
    ends = np.stack([np.stack([s[:, 0], s[:, -1]], 1) for s in chosen], 1)  # [k, P, 2, 2]
    marks = np.stack([first[:, 0], first[:, -1]], 1)  # [k, 2, 2]
    negative = labels[index] == 0
    if negative.any():
        dist = np.linalg.norm(ends[:, :1, :, None, :] - ends[:, 1:, None, :, :], axis=-1)  # [k, P-1, 2, 2]
        score = np.abs(dist - target[:, None, None, None]) + rng.uniform(0, 1e-6, dist.shape)
        best = score.reshape(k, -1).argmin(1)
        other, end_a, end_b = np.unravel_index(best, dist.shape[1:])
        neg_marks = np.stack([ends[rows_k, 0, end_a], ends[rows_k, other + 1, end_b]], 1)
        marks = np.where(negative[:, None, None], neg_marks, marks)
    # marker disks: pixel centres within marker_radius of a marker centre
    r = geo["marker_radius"]
    offsets = np.arange(-math.ceil(r), math.ceil(r) + 1)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    centre_px = np.floor(marks).astype(int)  # [k, 2, 2]
    px = centre_px[..., None, None, 0] + dx  # [k, 2, D, D]
    py = centre_px[..., None, None, 1] + dy
    inside = (px + 0.5 - marks[..., None, None, 0]) ** 2 + (py + 0.5 - marks[..., None, None, 1]) ** 2 <= r * r
    # ... and every marker includes its own centre pixel, so it touches the snake end it sits on
    inside |= (dx == 0) & (dy == 0)
    img = np.zeros((k, resolution, resolution), dtype=np.uint8)
    for p in pixels:
        xy = np.clip(np.floor(p).astype(int), 0, resolution - 1)
        img[np.arange(k)[:, None], xy[..., 1], xy[..., 0]] = 255
    bi = np.broadcast_to(np.arange(k)[:, None, None, None], px.shape)
    img[bi[inside], np.clip(py, 0, resolution - 1)[inside], np.clip(px, 0, resolution - 1)[inside]] = 255
    # keep an image only when each snake is one component and snakes are apart (markers included): components of
    # the image dilated by rho pixels join pixels up to 2 * rho + 1 >= bridge apart (conservative for negatives)
    rho = max(1, math.ceil((geo["bridge"] - 1) / 2))
    lit = ndimage.binary_dilation(img > 0, structure=np.ones((1, 2 * rho + 1, 2 * rho + 1), dtype=bool))
    plane = np.zeros((3, 3, 3), dtype=bool)
    plane[1] = True  # 8-connectivity within an image, none across images
    components, count = ndimage.label(lit, structure=plane)
    owner = np.array([sl[0].start for sl in ndimage.find_objects(components)], dtype=int)
    per_image = np.bincount(owner, minlength=k) if count else np.zeros(k, dtype=int)
    rows_k = np.arange(k)
    joined = (
        components[rows_k, centre_px[:, 0, 1], centre_px[:, 0, 0]]
        == components[rows_k, centre_px[:, 1, 1], centre_px[:, 1, 0]]
    )
    kept = (per_image == len(chosen)) & (joined == labels[index].astype(bool))
    images[index[kept]] = img[kept]
    markers[index[kept]] = marks[kept]
    return kept


class PathfinderDataModule(SequenceDataModule):
    """LRA Pathfinder generated offline (or read from the release layout with `path`); see the module docstring.

    Args:
        resolution: image side in pixels (32, 64, 128 in LRA); the sequence length is resolution ** 2.
        num_train, num_val, num_test: images per split (half of each positive).
        contour_length, num_distractors, max_turn: the snakes (see `generate_pathfinder`).
        path: a release directory with `metadata/*.npy` and the PNGs, instead of generating.
        split_fractions: train and val fractions of the release's samples (the rest is test).
        batch_size, num_workers, seed: see `BaseDataModule`.
    """

    def __init__(
        self,
        resolution: int = 32,
        num_train: int = 4000,
        num_val: int = 500,
        num_test: int = 500,
        contour_length: int = 8,
        num_distractors: int = 2,
        max_turn: float = math.pi / 5,
        path: str | None = None,
        split_fractions: tuple[float, float] = (0.8, 0.1),
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(path=path, batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        require(min(num_train, num_val, num_test) > 0, "num_train, num_val and num_test must be positive")
        require(
            len(split_fractions) == 2 and min(split_fractions) > 0 and sum(split_fractions) < 1,
            f"split_fractions must be two positive train/val fractions summing below 1, got {split_fractions}",
        )
        self.vocab_size, self.num_classes, self.seq_len = 257, 2, resolution * resolution

    def build(self) -> dict[str, Split]:
        hp = self.hparams
        if self.path is not None:
            return self.read_release()
        out = {}
        sizes = {"train": hp.num_train, "val": hp.num_val, "test": hp.num_test}
        for i, split in enumerate(SPLITS):
            images, labels, _ = generate_pathfinder(
                sizes[split], hp.resolution, hp.contour_length, hp.num_distractors, hp.max_turn, seed=[hp.seed, i]
            )
            out[split] = _to_split(images, labels)
        return out

    def read_release(self) -> dict[str, Split]:
        """Every sample listed in `metadata/*.npy` (text lines), its PNG resized check included, then split."""
        from PIL import Image

        root = Path(self.check_path_exists())
        metas = sorted((root / "metadata").glob("*.npy"), key=lambda p: (len(p.stem), p.stem))
        if not metas:
            raise DataError(f"{root / 'metadata'} holds no *.npy metadata files")
        res = self.hparams.resolution
        images, labels = [], []
        for meta in metas:
            for line_no, line in enumerate(meta.read_text().splitlines(), start=1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) < 4 or not fields[3].isdigit() or int(fields[3]) not in (0, 1):
                    raise DataError(f"{meta} line {line_no}: expected '<subdir> <file> <index> <label 0|1> ...'")
                file = root / fields[0] / fields[1]
                try:
                    with Image.open(file) as image:
                        pixels = np.asarray(image.convert("L"))
                except (OSError, ValueError) as err:
                    raise DataError(f"cannot read Pathfinder image {file}: {err}") from err
                if pixels.shape != (res, res):
                    raise DataError(f"{file} is {pixels.shape[1]}x{pixels.shape[0]}, expected {res}x{res}")
                images.append(pixels)
                labels.append(int(fields[3]))
        order = np.random.default_rng(self.hparams.seed).permutation(len(images))
        stack, label = np.stack(images)[order], np.asarray(labels, dtype=np.int64)[order]
        n_train = int(len(order) * self.hparams.split_fractions[0])
        n_val = int(len(order) * self.hparams.split_fractions[1])
        if min(n_train, n_val, len(order) - n_train - n_val) < 1:
            raise DataError(f"{root}: {len(order)} samples are too few for train, val and test splits")
        cuts = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(order))}
        return {split: _to_split(stack[a:b], label[a:b]) for split, (a, b) in cuts.items()}


def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    """images [N, H, W] uint8 -> tokens [N, H * W] = grey level + 1 (row-major); labels [N]."""
    tokens = torch.from_numpy(images.reshape(len(images), -1).astype(np.int64) + 1)
    return {"tokens": tokens, "label": torch.from_numpy(np.asarray(labels, dtype=np.int64))}


class PathXDataModule(PathfinderDataModule):
    """Path-X: Pathfinder at 128x128 (16384 tokens), with few samples by default for CPUs."""

    def __init__(
        self,
        resolution: int = 128,
        num_train: int = 512,
        num_val: int = 128,
        num_test: int = 128,
        contour_length: int = 8,
        num_distractors: int = 2,
        max_turn: float = math.pi / 5,
        path: str | None = None,
        split_fractions: tuple[float, float] = (0.8, 0.1),
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(
            resolution,
            num_train,
            num_val,
            num_test,
            contour_length,
            num_distractors,
            max_turn,
            path,
            split_fractions,
            batch_size,
            num_workers,
            seed,
        )
