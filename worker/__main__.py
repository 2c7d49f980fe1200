"""`python -m worker ...`: the same as `python main.py ...` (how `start` runs an installed worker)."""

from worker.cli import entry

entry()
