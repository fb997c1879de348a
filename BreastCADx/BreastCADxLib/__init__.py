"""BreastCADx library: Slicer-independent imaging, segmentation and classification."""

__version__ = "0.1.0"
