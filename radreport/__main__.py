"""Allows `python -m radreport`."""

from radreport.cli import main

main()
