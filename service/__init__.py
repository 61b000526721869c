"""The report service: DICOM in over HTTP and DICOMweb, Celery workers on Redis, drafts out, review.

One package per domain; `service/README.md` has the table of what lives where. Imports point down:
cli -> app -> dev -> ui | worker | ops -> review -> quality | dicomweb -> studies -> auth -> core.
"""
