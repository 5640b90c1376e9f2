"""The smallest sensible user model, shared by the tests that write it into a throw-away repository.

conv 1->4 3x3 (4*9+4 = 40 parameters) on a 28x28 image gives 4x26x26, averaged (GAP), then fc 4->10
(4*10+10 = 50): 90 parameters. torchinfo's mult-adds count each weight once per output position:
40 * 26*26 + 50 = 27,090. Ends in logits.
"""

import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))
