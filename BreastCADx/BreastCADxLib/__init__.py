"""BreastCADx library: breast-lesion segmentation and classification, usable with or without 3D Slicer.

Layers, each importing only from the ones below it (checked by Testing/Python/test_layers.py):

    cli/       the `breastcadx` command: main, batch, pacs, serve
    web/       `breastcadx serve`: the workflow in a browser on trame-slicer views, on the scene logic
    scene/     Slicer side: scene logic, MRML bridge, parameters, background jobs, worker, installer
    train/     `breastcadx train`: a model set from located findings (manifest, features, CV by patient)
    results/   one case's files, the overlay picture, DICOM SEG / SR / Secondary Capture
    analysis/  preprocessing, networks, model registry, segmentation, features, classifier, pipeline
    io/        DICOM / raster / ITK readers and writers, DICOMweb client
    errors.py, image.py   core types shared by every layer

Rules: a layer imports only from layers listed below it; nothing outside scene/ and web/ imports slicer, qt,
ctk, vtk or trame.
"""

from pathlib import Path

__version__ = "0.1.0"
RESOURCES = Path(__file__).resolve().parents[1] / "Resources"
SAMPLE_IMAGE = RESOURCES / "SampleData" / "BreastCADx_US_sample.dcm"
RESULT_SERIES_PREFIX = "BreastCADx"  # series descriptions of the SEG / SR / SC we write (and skip when reading)
