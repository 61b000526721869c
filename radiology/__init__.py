"""Radiology data: DICOM decoding (dicom), studies and views (studies), report sections (reports),
de-identification (deid), MIMIC-CXR layout (mimic) and synthetic studies (synth).

Submodules are imported explicitly (``from radiology import dicom``); this package imports nothing
heavy on its own.
"""
