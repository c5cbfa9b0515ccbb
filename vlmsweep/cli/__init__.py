"""Command-line entry points: every `python -m` main and the checks a command line gets before Hydra starts.
Nothing in the package imports cli/; the `python -m` spellings (vlmsweep/__main__.py, data/__main__.py, ...) call it."""
