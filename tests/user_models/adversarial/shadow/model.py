import checks  # noqa: F401  (the user's own checks.py; only valid here)
