raise ImportError("the user's own checks.py was imported")
