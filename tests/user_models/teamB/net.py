import helpers
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = helpers.block(), nn.Linear(helpers.WIDTH, 10)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))
