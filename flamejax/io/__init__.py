"""Writing and reading results: meshes (OBJ/PLY/GLB), fit files (.json/.npz), pictures; every write is atomic."""

from flamejax.io._atomic import atomic_path, write_image, write_json, write_npz
from flamejax.io._mesh import FLAME_INDEX_ATTRIBUTE, MESH_FORMATS, build_trimesh, export_mesh

__all__ = [
    "FLAME_INDEX_ATTRIBUTE", "MESH_FORMATS", "atomic_path", "build_trimesh", "export_mesh", "write_image",
    "write_json", "write_npz",
]
