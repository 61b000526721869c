"""How good the drafts are: each signed report's draft scored against the signed text, quality
summaries and their page, and offline evaluations of a model bundle (run on the workers)."""
