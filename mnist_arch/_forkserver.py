"""Imported once by the fork server that every isolated worker is forked from (mnist_arch.isolate, channel).

It loads torch, the engine and the registry, and runs one tiny forward pass of each common layer kind on
one thread, so that each worker starts with the libraries imported and their first-call set-up done.
One thread, because a process that forks must not have started a thread pool: each worker sets its own
thread count.
"""

import os

from mnist_arch import channel
from mnist_arch.channel import guard_fork_server

# First, before the seconds torch takes to import: on Linux the server ends, with every process below it, when
# the judge's thread that started it ends, so a judge killed even now leaves nothing behind (isolate's docstring).
guard_fork_server()

# Idle OpenMP threads sleep instead of spinning (read once, when torch loads its OpenMP runtime): a spinning
# thread waits at every barrier for one that a busy neighbour has descheduled. machine.choose_threads uses
# two threads only under this policy (docs/training.md has the measurements).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import mnist_arch.checks  # noqa: E402, F401  (and the trace, receptive field and report it imports)
import mnist_arch.loader  # noqa: E402, F401
import mnist_arch.models  # noqa: E402, F401  (registers the references)
import mnist_arch.registry  # noqa: E402, F401

channel.TORCH_THREADS = torch.get_num_threads()  # torch's own default, before this server takes one
torch.set_num_threads(1)
with torch.no_grad():
    _x = F.conv2d(torch.rand(2, 1, 28, 28), torch.rand(8, 1, 3, 3), torch.rand(8), padding=1)
    _x = F.batch_norm(_x, torch.zeros(8), torch.ones(8), training=True)
    _x = F.dropout(F.max_pool2d(F.relu(_x), 2), 0.1)
    _x = F.log_softmax(F.linear(F.adaptive_avg_pool2d(_x, 1).flatten(1), torch.rand(10, 8)), 1)
del _x
