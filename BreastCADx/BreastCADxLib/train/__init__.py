"""`breastcadx train`: a model set from a hospital's or a modality's own located findings (train/pipeline.py)."""
