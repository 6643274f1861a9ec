"""flamejax: fit the FLAME head model to photographs with JAX.

The data path::

    model = load_flame()                                   # FLAME file from $FLAMEJAX_WEIGHTS (see README)
    fitter = Fitter.create(model, FitConfig())             # built once: model, configs, networks, devices
    fits = fitter([preprocess("a.jpg"), preprocess("b.jpg")])   # -> list[ImageFit]: params, camera, verdict

``preprocess`` (photograph -> aligned crop, landmarks, mask) -> :class:`Fitter` (start, rigid stage, landmark
stage, optional photometric stage, verdict) -> :class:`ImageFit` -> files (:mod:`flamejax.outputs`, read back with
:func:`load_fit`). Folders: :func:`fit_directory`. The pure JAX core, for vmapping your own programs:
:func:`flame_forward`, :func:`fit_landmarks` / :func:`fit_landmarks_batch`, :mod:`flamejax.render`,
:mod:`flamejax.camera`. Subpackages: ``flame``, ``camera``, ``render``, ``perception``, ``init``, ``fit``, ``io``,
``fitdir``.
"""

from flamejax import _runtime

_runtime.apply_xla_flags()

from flamejax._runtime import CompileClock, enable_compilation_cache  # noqa: E402
from flamejax.camera import Camera  # noqa: E402
from flamejax.files import CorruptFileError, MissingFileError, find_file  # noqa: E402
from flamejax.fit import (  # noqa: E402
    FitConfig,
    FitResult,
    FitStart,
    LandmarkTargets,
    PhotometricConfig,
    PhotometricTargets,
    Status,
    fit_landmarks,
    fit_landmarks_batch,
    fit_photometric_batch,
    stack_targets,
)
from flamejax.fitter import Fitter, ImageFit, Networks, PhotometricBundle, QualityConfig  # noqa: E402
from flamejax.flame import FlameMesh, FlameModel, FlameParams, flame_forward, load_flame  # noqa: E402

__version__ = "0.2.0"


def preprocess(image, config=None):
    """Photograph (path, bytes or RGB array) -> :class:`flamejax.perception.Preprocessed` (see there)."""
    from flamejax.perception import PreprocessConfig
    from flamejax.perception import preprocess as _preprocess

    return _preprocess(image, config or PreprocessConfig())


def load_fit(path):
    """A fit written by flamejax (``.npz`` or ``.json``) -> :class:`flamejax.io.FitRecord`."""
    from flamejax.io import load_fit as _load_fit

    return _load_fit(path)


def __getattr__(name: str):
    # The directory runner pulls in perception and threads: imported on first use only.
    if name in ("fit_directory", "DirectoryConfig"):
        from flamejax import fitdir

        return getattr(fitdir, name)
    raise AttributeError(f"module 'flamejax' has no attribute {name!r}")


__all__ = [
    "Camera", "CompileClock", "CorruptFileError", "DirectoryConfig", "FitConfig", "FitResult", "FitStart",
    "Fitter", "FlameMesh", "FlameModel", "FlameParams", "ImageFit", "LandmarkTargets", "MissingFileError",
    "Networks", "PhotometricBundle", "PhotometricConfig", "PhotometricTargets", "QualityConfig", "Status",
    "enable_compilation_cache", "find_file", "fit_directory", "fit_landmarks", "fit_landmarks_batch",
    "fit_photometric_batch", "flame_forward", "load_fit", "load_flame", "preprocess", "stack_targets",
]
