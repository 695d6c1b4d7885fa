"""The leaderboard: validate, submit, build the static site, compare and export entries.

Each module imports its heavy dependencies (jsonschema, numpy, matplotlib) inside the
functions that need them, so the CLI that lists these commands stays fast.
"""
