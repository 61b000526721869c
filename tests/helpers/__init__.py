"""Helpers shared by the tests: tiny models, DICOM files, service clients and pytest plugins.

Test modules import them as `tests.helpers.<name>`; pytest runs with --import-mode=importlib, so no
test folder is put on sys.path and none shadows a package of the project.
"""
