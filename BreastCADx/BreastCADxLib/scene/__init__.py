"""Slicer side: scene logic, MRML bridge, parameters, background jobs, worker, installer.
The only layer that may import slicer, qt or vtk."""
