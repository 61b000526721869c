"""The radreport command line."""
