"""Perception: from a photograph to fitting targets, on the host in NumPy, offline.

The steps, each callable on its own::

    image = load_image("photo.jpg")                    # RGB8, EXIF applied
    face = detect_landmarks(image)                     # MediaPipe 478 points + confidence
    aligned = align_face(image, to_68(face.points))    # FFHQ crop + exact similarity maps
    mask = landmark_face_mask(points_in_crop, 512)     # or parse_face(aligned.image).mask
    person = person_silhouette(aligned.image, 256)     # the person against the background (selfie segmentation)

or all at once: ``preprocess("photo.jpg") -> Preprocessed``.

Pixel coordinates everywhere: x right, y down, pixel (row i, column j) centred at (j + 0.5, i + 0.5).
"""

from flamejax.perception._align import ALIGN_SCALE, AlignedFace, align_face, alignment_transform
from flamejax.perception._annotations import (AnnotationError, annotated, annotation_beside, read_aflw_mat,
                                              read_annotation, read_pts)
from flamejax.perception._errors import (FaceIndexError, ImageReadError, ImageTooSmallError, NoFaceError,
                                         PerceptionError)
from flamejax.perception._image import MIN_IMAGE_SIDE, load_image, to_rgb8
from flamejax.perception._landmarks import (DETECT_MAX_SIDE, MAX_FACES, FaceLandmarks, detect_landmarks,
                                            redetect_mirrored)
from flamejax.perception._layout import (FACE_OVAL, IBUG68_FROM_MEDIAPIPE, IBUG68_MIRROR, LEFT_BROW, LEFT_EYE,
                                         LIPS_INNER, LIPS_OUTER, MEDIAPIPE_IRIS_CENTERS, MEDIAPIPE_LEFT_IRIS,
                                         MEDIAPIPE_MIRROR, MEDIAPIPE_RIGHT_IRIS, NOSE, RIGHT_BROW, RIGHT_EYE, to_68,
                                         to_iris)
from flamejax.perception._mask import (FOREHEAD_KEPT, WIDE_CONTEXT_COVERAGE, landmark_face_mask, person_in_context,
                                       person_silhouette, points_inside)
from flamejax.perception._matting import composite_over_white, matte
from flamejax.perception._parsing import (CELEBAMASK_CLASSES, FACE_CLASSES, ParsingResult, parse_face,
                                          parsing_mask)
from flamejax.perception._preprocess import Preprocessed, PreprocessConfig, preprocess
from flamejax.camera import ndc_to_pixels, pixels_to_ndc
from flamejax.perception._transform import (compose_affine, inside_source, invert_affine,
                                            transform_points, warp_image)

__all__ = [
    "ALIGN_SCALE", "AlignedFace", "AnnotationError", "CELEBAMASK_CLASSES", "DETECT_MAX_SIDE", "FACE_CLASSES", "FACE_OVAL",
    "FOREHEAD_KEPT", "FaceIndexError", "FaceLandmarks", "IBUG68_FROM_MEDIAPIPE", "IBUG68_MIRROR",
    "ImageReadError", "ImageTooSmallError", "LEFT_BROW", "LEFT_EYE", "LIPS_INNER", "LIPS_OUTER", "MAX_FACES",
    "MEDIAPIPE_IRIS_CENTERS", "MEDIAPIPE_LEFT_IRIS", "MEDIAPIPE_MIRROR", "MEDIAPIPE_RIGHT_IRIS", "MIN_IMAGE_SIDE",
    "NOSE", "NoFaceError",
    "ParsingResult", "PerceptionError", "Preprocessed", "PreprocessConfig", "RIGHT_BROW", "RIGHT_EYE",
    "WIDE_CONTEXT_COVERAGE",
    "align_face", "alignment_transform", "annotated", "annotation_beside", "compose_affine", "composite_over_white", "detect_landmarks",
    "inside_source", "invert_affine", "landmark_face_mask", "load_image", "matte", "ndc_to_pixels", "parse_face", "parsing_mask",
    "person_in_context", "person_silhouette", "points_inside",
    "pixels_to_ndc", "preprocess", "read_aflw_mat", "read_annotation", "read_pts", "redetect_mirrored", "to_68", "to_iris", "to_rgb8", "transform_points",
    "warp_image",
]
