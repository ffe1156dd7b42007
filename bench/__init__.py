"""hewn's benchmark: `python -m bench` (not part of pytest). See bench/__main__.py."""
