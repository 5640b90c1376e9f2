"""A training script that also defines the model, with no `if __name__ == "__main__":` guard."""
import sys

import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


print("training...")
sys.exit(0)
