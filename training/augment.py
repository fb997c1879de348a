"""The scanner-imitating augmentations live in the library (`breastcadx train` uses them too); the training
scripts import them from here as before."""

from BreastCADxLib.train.augment import ScannerAugment, negative_crop

__all__ = ["ScannerAugment", "negative_crop"]
