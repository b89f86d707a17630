"""agw-fast benchmark suite: `python bench/run.py --help` (see bench/README.md).

Stdlib only (plus uvloop when the venv has it, and matplotlib for the optional chart).
Nothing here is imported by the `agw_fast` package.
"""
