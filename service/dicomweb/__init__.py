"""DICOM in and out: DICOMweb (PS3.18) under `/dicomweb`, the C-STORE listener, the report outbox.

STOW-RS (`routes`, `stow`) and the C-STORE listener (`scp`) receive studies; QIDO-RS and WADO-RS
(`read_routes`, `qido`, `wado`, `frames`) serve them to viewers; the outbox sends signed reports
back to the PACS as DICOM SR.
"""
