"""The radiologist's review page: static HTML/CSS/JS (no build step) served by the API at /ui/."""
