"""Thin entry point: `python main.py ...` from a checkout."""

from worker.cli import entry

if __name__ == "__main__":
    entry()
