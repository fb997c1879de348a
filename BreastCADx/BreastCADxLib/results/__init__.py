"""Results: one case's files, the overlay picture, DICOM SEG/SR/SC. Imports analysis/ and io/."""
