"""Test heads with 3D truth for the identity benchmark: the shared scans, sampled FLAME heads, their pictures.

Everything here is host-side NumPy/trimesh/OpenCV except the rendering, which is flamejax's renderer. Every
flamejax name the identity benchmark uses is imported in :mod:`benchmarks.bench_identity` and passed in (``fj``),
so that file alone needs repointing when internals move.

Head frame: FLAME's (x to the subject's left, y up, z out of the face, metres). The scans are moved into it by the
rigid (Kabsch) transform that best maps their 51 landmarks onto the mean FLAME head's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

SCANS = Path(__file__).resolve().parents[2] / "shared" / "scans"
NOW_SEVEN = (36, 39, 42, 45, 30, 48, 54)
"""iBUG indices of NoW's alignment landmarks: eye corners, nose tip, mouth corners."""
SKIN_TONES = np.array([[0.86, 0.66, 0.55], [0.80, 0.58, 0.46], [0.66, 0.46, 0.34], [0.48, 0.32, 0.23]], np.float32)
HAIR = np.array([0.16, 0.11, 0.08], np.float32)


@dataclasses.dataclass(frozen=True)
class Head:
    """One test subject: a surface in FLAME's head frame and what the scoring needs."""

    name: str
    kind: str
    """"flame" (sampled from the model), "registered" (real scan in FLAME topology) or "raw" (real scan)."""
    vertices: np.ndarray
    """Neutral surface, head frame (for "flame" heads: shape only, no expression)."""
    faces: np.ndarray
    landmarks51: np.ndarray
    """iBUG 17..67 on the neutral surface, head frame."""
    albedo: np.ndarray
    """Per-vertex RGB in [0, 1]."""
    shape: np.ndarray | None = None
    """True identity coefficients ("flame" heads only)."""


def rigid_fit(source: np.ndarray, target: np.ndarray, scale: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising |s R source + t - target|² (Umeyama; ``scale=False``: s = 1)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, sig, vt = np.linalg.svd(b.T @ a)
    fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ fix @ vt
    s = float(np.trace(np.diag(sig) @ fix) / np.sum(a**2)) if scale else 1.0
    return s, rot, mu_t - s * rot @ mu_s


def apply(transform: tuple[float, np.ndarray, np.ndarray], points: np.ndarray) -> np.ndarray:
    s, rot, t = transform
    return s * np.asarray(points, np.float64) @ rot.T + t


# ---------------------------------------------------------------------------------------------- albedo


def _near_polyline(points: np.ndarray, polyline: np.ndarray, radius: float) -> np.ndarray:
    """Distance of each point to a 3D polyline below ``radius`` (bool)."""
    best = np.full(len(points), np.inf)
    for a, b in zip(polyline[:-1], polyline[1:]):
        ab = b - a
        t = np.clip(((points - a) @ ab) / max(ab @ ab, 1e-12), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(points - (a + t[:, None] * ab), axis=1))
    return best < radius


def flame_albedo(vertices: np.ndarray, landmarks51: np.ndarray, masks: dict, rng: np.random.Generator) -> np.ndarray:
    """A plausible per-vertex skin albedo on FLAME's topology, placed by the head's own geometry (head frame).

    Skin tone drawn from four (light to dark) with small per-channel jitter, warmer cheeks and nose, redder lips,
    dark brows along the brow landmarks, hair on the scalp, white eyeballs with a brown iris and black pupil
    centred on the most forward point of each eyeball.
    """
    v = np.asarray(vertices, np.float64)
    tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.93, 1.07, 3)
    colour = np.tile(tone, (len(v), 1))
    face_centre = landmarks51[13]  # nose tip (iBUG 30)
    cheek = np.exp(-((np.abs(v[:, 0] - face_centre[0]) - 0.04) ** 2 + (v[:, 1] - face_centre[1]) ** 2) / 0.02**2)
    colour *= 1.0 - 0.08 * cheek[:, None] * np.array([-0.4, 1.0, 1.0])
    lips = np.asarray(masks["lips"])
    colour[lips] = tone * np.array([0.82, 0.52, 0.52])
    for brow in (landmarks51[0:5], landmarks51[5:10]):
        lifted = brow + np.array([0.0, 0.002, 0.0])
        colour[_near_polyline(v, lifted, 0.0055) & (v[:, 2] > face_centre[2] - 0.06)] = HAIR * rng.uniform(0.8, 1.5)
    colour[np.asarray(masks["scalp"])] = HAIR
    for side in ("left_eyeball", "right_eyeball"):
        ball = np.asarray(masks[side])
        dist = np.linalg.norm(v[ball] - v[ball[np.argmax(v[ball, 2])]], axis=1)
        colour[ball] = np.where(dist[:, None] < 0.0055, [0.32, 0.2, 0.12], [0.88, 0.86, 0.82])
        colour[ball[dist < 0.0022]] = [0.03, 0.03, 0.03]
    return np.clip(colour, 0.0, 1.0).astype(np.float32)


def bake_texture(uv: np.ndarray, face_uv_index: np.ndarray, faces: np.ndarray, albedo: np.ndarray, size: int = 512,
                 fill: np.ndarray | None = None) -> np.ndarray:
    """Per-vertex colours painted into a UV texture (one flat colour per face, ``fill`` elsewhere)."""
    texture = np.empty((size, size, 3), np.float32)
    texture[:] = np.median(albedo, axis=0) if fill is None else fill
    corners = np.round(np.asarray(uv)[np.asarray(face_uv_index)] * size - 0.5).astype(np.int32)
    colours = albedo[np.asarray(faces)].mean(1)
    for tri, colour in zip(corners, colours):
        cv2.fillConvexPoly(texture, tri, colour.tolist())
    return cv2.GaussianBlur(texture, (3, 3), 0)


# ---------------------------------------------------------------------------------------------- subjects


def _read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    mesh = trimesh.load(path, process=False, force="mesh")
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int32)


def load_scans(mean_vertices: np.ndarray, mean_landmarks51: np.ndarray, flame_albedo_of: callable,
               flame_landmarks51: callable) -> list[Head]:
    """The two shared real heads, rigidly moved onto the mean head's landmarks; albedo by nearest mean vertex.

    The registered mesh's landmarks are FLAME's embedding on it (``flame_landmarks51(vertices)``): its
    ``landmark_3d.npy`` lies in another frame (6 cm off the mesh). The raw scan's are its hand-picked ones.
    ``flame_albedo_of(vertices, landmarks51)`` returns a per-vertex albedo for a head in FLAME's topology.
    """
    from scipy.spatial import cKDTree

    heads = []
    for name, kind, mesh, lmk in (("registered", "registered", "registered_flame/registered_mesh.ply",
                                   "registered_flame/landmark_3d.npy"),
                                  ("raw_scan", "raw", "head_scan/scan.obj", "head_scan/scan_lmks.npy")):
        if not (SCANS / mesh).is_file():
            continue
        vertices, faces = _read_mesh(SCANS / mesh)
        landmarks = flame_landmarks51(vertices) if kind == "registered" else np.load(SCANS / lmk)
        landmarks = np.asarray(landmarks, np.float64)
        to_head = rigid_fit(landmarks, mean_landmarks51)
        vertices, landmarks = apply(to_head, vertices), apply(to_head, landmarks)
        if kind == "registered":
            albedo = flame_albedo_of(vertices, landmarks)
        else:
            mean_on_scan = apply(rigid_fit(mean_landmarks51, landmarks, scale=True), mean_vertices)
            albedo = flame_albedo_of(mean_on_scan, landmarks)[cKDTree(mean_on_scan).query(vertices)[1]]
        heads.append(Head(name, kind, vertices.astype(np.float32), faces, landmarks.astype(np.float32), albedo))
    return heads


# ---------------------------------------------------------------------------------------------- pictures


def background(photos: list[Path], rng: np.random.Generator, size: int) -> np.ndarray:
    """A blurred corner of a shared photograph (hair, wall, clothes: no face), RGB float in [0, 1]."""
    photo = cv2.cvtColor(cv2.imread(str(photos[rng.integers(len(photos))])), cv2.COLOR_BGR2RGB)
    h, w = photo.shape[:2]
    side = min(h, w) // 4
    y = int(rng.choice([0, h - side]))
    x = int(rng.choice([0, w - side]))
    crop = cv2.resize(photo[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(crop, (0, 0), 4).astype(np.float32) / 255.0


def random_light(rng: np.random.Generator, ambient: float) -> np.ndarray:
    """SH light (9, 3): white-ish ambient plus a random directional band from the front half-space."""
    sh = np.zeros((9, 3), np.float32)
    sh[0] = ambient * rng.uniform(0.65, 0.85) * rng.uniform(0.95, 1.05, 3)
    direction = rng.normal(size=3) * [0.6, 0.5, 0.3] + [0.0, 0.3, 1.0]
    direction /= np.linalg.norm(direction)
    strength = rng.uniform(0.4, 0.9)
    sh[1], sh[2], sh[3] = strength * direction[1], strength * direction[2], strength * direction[0]
    return sh


def composite(rgb: np.ndarray, alpha: np.ndarray, back: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Render over a background, with a little sensor noise and a soft edge; uint8 RGB."""
    alpha = cv2.GaussianBlur(alpha.astype(np.float32), (3, 3), 0)[..., None]
    image = rgb * alpha + back * (1.0 - alpha) + rng.normal(0.0, 0.01, rgb.shape)
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
