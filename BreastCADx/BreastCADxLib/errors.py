"""Typed errors. Every message names the file (when there is one) and the cause."""

from __future__ import annotations

from pathlib import Path

# how a refused image can be analysed anyway, by front door (the guard's refusal ends with one)
OVERRIDE_HINT = "not analysed; to analyse it anyway: --allow-unvalidated-input"
PANEL_OVERRIDE_HINT = ("not analysed (the panel and the page take only images the models were validated on; "
                       "`breastcadx analyze --allow-unvalidated-input` analyses it anyway, flagged)")


class BreastCADxError(Exception):
    """Base class: `str(err)` is a complete, user-facing message."""

    code = "error"  # a stable cause code (results.csv error_code, `evaluate`); each subclass names its own

    def __init__(self, cause: str, path: str | Path | None = None) -> None:
        self.cause = cause
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {cause}" if self.path else cause)


class ImageReadError(BreastCADxError):
    """The file is missing, corrupt, truncated or not an image."""

    code = "image_unreadable"


class UnsupportedImageError(BreastCADxError):
    """A readable file we do not support (transfer syntax, modality, dimensionality, non-image DICOM)."""

    code = "image_unsupported"


class NoPixelDataError(UnsupportedImageError):
    """A DICOM object without pixel data (SR, presentation state, ...)."""

    code = "no_pixel_data"


class MaskError(BreastCADxError):
    """A mask that does not fit its image or cannot be used (empty, wrong grid, not binary)."""

    code = "mask_unusable"


class ImageTooLargeError(BreastCADxError):
    """Input over the memory budget."""

    code = "image_too_large"


class ModelError(BreastCADxError):
    """A model file that is missing, altered (SHA256 mismatch) or unreadable."""

    code = "model_file"
