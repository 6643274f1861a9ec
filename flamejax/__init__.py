"""flamejax: fit the FLAME head model to photographs with JAX.

The data path: ``preprocess`` (photograph -> aligned crop, landmarks, mask) -> ``fit_landmarks`` /
``fit_landmarks_batch`` (linear initialisation, rigid stage, landmark stage) -> optionally ``fit_photometric_batch``
-> ``FitResult`` -> exports (``flamejax.io``). Subpackages hold the details: ``flamejax.flame`` (model, forward pass,
landmark embeddings), ``flamejax.camera``, ``flamejax.render``, ``flamejax.perception``, ``flamejax.init`` (DECA /
MICA), ``flamejax.fit``, ``flamejax.io``.
"""

from flamejax import _xla_flags

_xla_flags.apply()

from flamejax.camera import Camera  # noqa: E402  (after the XLA flags)
from flamejax.files import CorruptFileError, MissingFileError, find_file  # noqa: E402
from flamejax.fit import (  # noqa: E402
    FitConfig,
    FitResult,
    LandmarkTargets,
    PhotometricConfig,
    PhotometricTargets,
    fit_landmarks,
    fit_landmarks_batch,
    fit_photometric,
    fit_photometric_batch,
    stack_targets,
)
from flamejax.flame import FlameMesh, FlameModel, FlameParams, flame_forward, load_flame  # noqa: E402

__version__ = "0.1.0"


def preprocess(image, config=None):
    """Photograph (path, bytes or RGB array) -> :class:`flamejax.perception.Preprocessed` (see there)."""
    from flamejax.perception import PreprocessConfig
    from flamejax.perception import preprocess as _preprocess

    return _preprocess(image, config or PreprocessConfig())


def __getattr__(name: str):
    # The directory runner pulls in perception and threads: imported on first use only.
    if name in ("fit_directory", "DirectoryConfig"):
        from flamejax import batch

        return getattr(batch, name)
    raise AttributeError(f"module 'flamejax' has no attribute {name!r}")


__all__ = [
    "Camera", "DirectoryConfig", "fit_directory", "CorruptFileError", "FitConfig", "FitResult", "FlameMesh", "FlameModel", "FlameParams",
    "LandmarkTargets", "MissingFileError", "PhotometricConfig", "PhotometricTargets", "find_file", "fit_landmarks",
    "fit_landmarks_batch", "fit_photometric", "fit_photometric_batch", "flame_forward", "load_flame", "preprocess",
    "stack_targets",
]
