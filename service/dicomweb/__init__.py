"""DICOMweb (PS3.18) under `/dicomweb`: STOW-RS today; QIDO-RS, WADO-RS and the DICOM SR sent back to
the PACS belong here too."""
