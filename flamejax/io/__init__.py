"""Writing and reading results: meshes (OBJ/PLY/GLB), fit files (.json/.npz), pictures; every write is atomic."""

from flamejax.io._atomic import atomic_path, write_image, write_json, write_npz
from flamejax.io._fit_file import FIT_FORMAT_VERSION, FitRecord, load_fit, save_fit
from flamejax.io._mesh import FLAME_INDEX_ATTRIBUTE, MESH_FORMATS, build_trimesh, export_mesh

__all__ = [
    "FIT_FORMAT_VERSION", "FLAME_INDEX_ATTRIBUTE", "MESH_FORMATS", "FitRecord", "atomic_path", "build_trimesh",
    "export_mesh", "load_fit", "save_fit", "write_image", "write_json", "write_npz",
]
