"""Analysis: image in, AnalysisResult out (preprocessing, networks, model registry, segmentation,
radiomics, deep features, descriptors, classifier, calibration, pipeline). Imports io/ and the core types only."""
