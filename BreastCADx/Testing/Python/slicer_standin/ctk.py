"""Stand-in for Slicer's `ctk` module."""
