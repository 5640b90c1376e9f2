"""Imported by the fork server after `mnist_arch._forkserver` where the process will train
(`mnist_arch.isolate.expect_training`): `torch._dynamo`, which every torch.optim optimizer imports (about
1 s), once here instead of in each training worker.

A failure here must not stop the server, which would take every worker down with it, checks included
(the fork server skips only an ImportError of a preloaded module): a worker's first optimizer then
imports it again and reports what is wrong.
"""

try:
    import torch._dynamo  # noqa: F401
except Exception:  # noqa: BLE001, S110
    pass
