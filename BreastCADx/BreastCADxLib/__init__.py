"""BreastCADx library: breast-lesion segmentation and classification, usable with or without 3D Slicer.

Layers, each importing only from the ones below it (checked by Testing/Python/test_layers.py):

    scene/     Slicer side: scene logic, MRML bridge, parameters, background jobs, worker, installer
    cli/       the `breastcadx` command: main, batch, pacs
    results/   one case's files, the overlay picture, DICOM SEG / SR / Secondary Capture
    analysis/  preprocessing, networks, model registry, segmentation, features, classifier, pipeline
    io/        DICOM / raster / ITK readers and writers, DICOMweb client
    errors.py, image.py   core types shared by every layer

Rules: analysis/ and io/ import nothing from results/, cli/ or scene/; results/ nothing from cli/ or scene/;
nothing outside scene/ imports slicer, qt, ctk or vtk.
"""

__version__ = "0.1.0"
