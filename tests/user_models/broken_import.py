import torch  # noqa: F401  (a real model file imports torch first)

raise RuntimeError("cannot find weights.pt")
