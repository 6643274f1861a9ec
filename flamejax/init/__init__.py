"""Initialisation of a fit from the reference's two networks, run through ONNX Runtime (numpy only, no torch).

Data path: photograph + 68 landmarks -> :func:`deca_crop` / :func:`mica_crop` -> :class:`DecaEncoder` /
:class:`MicaEncoder` -> :func:`merge_network_codes` -> :class:`NetworkInit` (FLAME parameters to start from).
:func:`initialise_from_networks` does all of it for one photograph.

The weights are the user's (non-commercial licences); ``flamejax convert deca|mica`` turns the published
checkpoints into ONNX files with these contracts:

==================  =========  ========================  ======================================================
file                name       float32 shape             meaning
==================  =========  ========================  ======================================================
deca_encoder.onnx   images     (N, 3, 224, 224) input    :func:`deca_crop`, NCHW, RGB in [0, 1]
                    codes      (N, 236) output           shape 100, tex 50, exp 50, pose 6, cam 3, light 27
mica.onnx           images     (N, 3, 112, 112) input    :func:`mica_crop`, NCHW, RGB in [-1, 1]
                    shape      (N, 300) output           FLAME identity coefficients
                    identity   (N, 512) output           L2-normalised ArcFace embedding (optional)
==================  =========  ========================  ======================================================

Which start is used: ``"deca+mica"``, ``"mica"``, ``"deca"``, or ``"linear"`` (the weights-free
initialisation, which lives elsewhere); ``"auto"`` takes the first of :func:`available_init_methods`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jaxtyping import Float, UInt8

from flamejax.files import find_file
from flamejax.init._crops import (
    ARCFACE_TEMPLATE,
    ARCFACE_TEMPLATE_PX,
    DECA_CROP_SIZE,
    MICA_CROP_SIZE,
    deca_crop,
    deca_crop_transform,
    five_points,
    mica_crop,
    mica_crop_transform,
    similarity_lsq,
)
from flamejax.init._deca import DECA_CODE_LAYOUT, DECA_CODE_SIZE, DECA_KEY, DecaCodes, DecaEncoder, decode_deca
from flamejax.init._mica import MICA_KEY, MicaEncoder

__all__ = [
    "ARCFACE_TEMPLATE", "ARCFACE_TEMPLATE_PX", "DECA_CODE_LAYOUT", "DECA_CODE_SIZE", "DECA_CROP_SIZE",
    "INIT_METHODS", "MICA_CROP_SIZE", "DecaCodes", "DecaEncoder", "MicaEncoder", "NetworkInit",
    "available_init_methods", "deca_crop", "deca_crop_transform", "decode_deca", "five_points",
    "initialise_batch_from_networks", "initialise_from_networks", "merge_network_codes", "mica_crop",
    "mica_crop_transform", "resolve_init_method", "similarity_lsq",
]

INIT_METHODS = ("deca+mica", "mica", "deca", "linear")
"""Every initialisation, in the order ``"auto"`` prefers them."""
FLAME_SHAPE_SIZE = 300
FLAME_EXPRESSION_SIZE = 100


@dataclasses.dataclass(frozen=True)
class NetworkInit:
    """FLAME parameters predicted by the networks for one photograph (float32); ``None`` where no network
    predicts that group. Head pose, neck, eyes and the camera are not set: DECA's global pose and camera
    are discarded (the rigid fit finds the camera), neck and eyes start at zero."""

    shape: Float[np.ndarray, "300"] | None
    """Identity: MICA's 300 coefficients; with DECA alone, DECA's 100 in slots 0-99 and zeros after."""
    expression: Float[np.ndarray, "100"] | None
    """DECA's 50 expression coefficients in slots 0-49, zeros in 50-99."""
    jaw: Float[np.ndarray, "3"] | None
    """DECA's axis-angle jaw rotation."""
    texture: Float[np.ndarray, "50"] | None
    """DECA's albedo PCA coefficients (BFM albedo mapped to FLAME)."""
    light: Float[np.ndarray, "9 3"] | None
    """DECA's spherical-harmonics light, 9 coefficients x RGB."""
    method: str
    """``"deca+mica"``, ``"deca"`` or ``"mica"``: the networks that produced these numbers."""
    providers: dict[str, str]
    """Network -> ONNX Runtime execution provider that ran it, e.g. ``{"deca": "CPUExecutionProvider"}``."""


def available_init_methods(deca_path: str | Path | None = None, mica_path: str | Path | None = None) -> list[str]:
    """The initialisations the weights found allow, best first; always ends with ``"linear"``.

    Only looks for the files (and checks known checksums); it does not load them.
    """
    have_deca = find_file(DECA_KEY, deca_path, required=False) is not None
    have_mica = find_file(MICA_KEY, mica_path, required=False) is not None
    wanted = {"deca+mica": have_deca and have_mica, "mica": have_mica, "deca": have_deca, "linear": True}
    return [method for method in INIT_METHODS if wanted[method]]


def resolve_init_method(method: str = "auto", deca_path: str | Path | None = None,
                        mica_path: str | Path | None = None) -> str:
    """The initialisation to run for a ``--init`` choice: ``"auto"`` becomes the best available one; a network
    method whose weights are absent raises :class:`~flamejax.files.MissingFileError` saying where to get them."""
    if method == "auto":
        return available_init_methods(deca_path, mica_path)[0]
    if method not in INIT_METHODS:
        raise ValueError(f"unknown initialisation {method!r}; choose one of auto, {', '.join(INIT_METHODS)}")
    if "deca" in method:
        find_file(DECA_KEY, deca_path, required=True)
    if "mica" in method:
        find_file(MICA_KEY, mica_path, required=True)
    return method


def merge_network_codes(deca: DecaCodes | None, mica_shape: Float[np.ndarray, "N 300"] | None,
                        providers: dict[str, str]) -> list[NetworkInit]:
    """The reference's merge, per image: MICA's shape; DECA's expression (slots 0-49), jaw, texture and light."""
    if deca is None and mica_shape is None:
        raise ValueError("merge_network_codes: neither DECA codes nor MICA shapes given")
    method = "deca+mica" if deca is not None and mica_shape is not None else ("deca" if deca is not None else "mica")
    count = len(deca) if deca is not None else len(mica_shape)
    if mica_shape is not None:
        mica_shape = np.asarray(mica_shape, np.float32)
        if mica_shape.shape != (count, FLAME_SHAPE_SIZE):
            raise ValueError(f"merge_network_codes: MICA shapes {mica_shape.shape}, expected ({count}, 300)")
    results = []
    for i in range(count):
        groups: dict[str, np.ndarray | None] = dict(shape=None, expression=None, jaw=None, texture=None, light=None)
        if deca is not None:
            groups.update(shape=_padded(deca.shape[i], FLAME_SHAPE_SIZE),
                          expression=_padded(deca.exp[i], FLAME_EXPRESSION_SIZE),
                          jaw=deca.jaw[i].copy(), texture=deca.tex[i].copy(), light=deca.light[i].copy())
        if mica_shape is not None:
            groups["shape"] = mica_shape[i].copy()
        results.append(NetworkInit(**groups, method=method, providers=dict(providers)))
    return results


def _padded(values: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros(size, np.float32)
    out[: values.shape[0]] = values
    return out


def initialise_from_networks(image: UInt8[np.ndarray, "H W 3"], lmk68: Float[np.ndarray, "68 2"],
                             method: str = "auto", deca: DecaEncoder | None = None,
                             mica: MicaEncoder | None = None) -> NetworkInit | None:
    """FLAME starting parameters for one RGB photograph from its 68 landmarks (pixels).

    Args:
      method: ``"auto"`` (the networks whose weights are present; ``None`` when there are none),
        ``"deca+mica"``, ``"deca"``, ``"mica"`` (weights required: :class:`~flamejax.files.MissingFileError`
        otherwise), or ``"linear"`` (returns ``None``: the caller runs the weights-free initialisation).
      deca, mica: networks already loaded (load them once when initialising many photographs); by default
        they are loaded from the weights folders.
    """
    results = initialise_batch_from_networks([image], np.asarray(lmk68)[None], method, deca, mica)
    return None if results is None else results[0]


def initialise_batch_from_networks(images: Sequence[UInt8[np.ndarray, "H W 3"]], lmk68: Float[np.ndarray, "N 68 2"],
                                   method: str = "auto", deca: DecaEncoder | None = None,
                                   mica: MicaEncoder | None = None) -> list[NetworkInit] | None:
    """:func:`initialise_from_networks` for N photographs (each network runs once on the whole batch)."""
    lmk68 = np.asarray(lmk68, np.float64)
    if lmk68.ndim != 3 or lmk68.shape[1:] != (68, 2) or len(images) != lmk68.shape[0]:
        raise ValueError(f"expected one (68, 2) landmark array per image; got {len(images)} images, "
                         f"landmarks of shape {lmk68.shape}")
    deca, mica = _networks(method, deca, mica)
    if deca is None and mica is None:
        return None
    codes = shapes = None
    providers = {}
    if deca is not None:
        codes = deca(np.stack([deca_crop(image, points)[0] for image, points in zip(images, lmk68)]))
        providers["deca"] = deca.provider
    if mica is not None:
        shapes = mica(np.stack([mica_crop(image, points)[0] for image, points in zip(images, lmk68)]))
        providers["mica"] = mica.provider
    return merge_network_codes(codes, shapes, providers)


def _networks(method: str, deca: DecaEncoder | None, mica: MicaEncoder | None
              ) -> tuple[DecaEncoder | None, MicaEncoder | None]:
    """The networks a method runs: given ones first, else loaded (required unless ``"auto"``)."""
    if method not in ("auto", *INIT_METHODS):
        raise ValueError(f"unknown initialisation {method!r}; choose one of auto, {', '.join(INIT_METHODS)}")
    if method == "linear":
        return None, None
    required = method != "auto"
    if method == "auto" or "deca" in method:
        deca = deca if deca is not None else DecaEncoder.load(required=required)
    else:
        deca = None
    if method == "auto" or "mica" in method:
        mica = mica if mica is not None else MicaEncoder.load(required=required)
    else:
        mica = None
    return deca, mica
