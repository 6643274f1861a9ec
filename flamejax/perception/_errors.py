"""Errors raised by the perception stage; all are ``ValueError``s so callers can catch one family."""

from __future__ import annotations


class PerceptionError(ValueError):
    """Base class: a photograph could not be turned into fitting targets."""


class ImageReadError(PerceptionError):
    """The image source is missing, empty, truncated, corrupt or of an unsupported format or array layout."""


class ImageTooSmallError(PerceptionError):
    """The image is too small to hold a detectable face."""


class NoFaceError(PerceptionError):
    """No face was found in the image."""


class FaceIndexError(PerceptionError, IndexError):
    """The face index asked for is outside the faces found."""
