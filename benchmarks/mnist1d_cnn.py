"""A small 1-D convolutional network for MNIST-1D (the ``ConvBase`` of Greydanus, 2020, by default).

    squeeze train --arch benchmarks/mnist1d_cnn.py:ConvNet1D --data mnist1d:62500 --dim 500 -o c.sqz

Three stride-2 convolutions (kernel 5, 3, 3) with ReLU, then a linear head: D = 5,210 with
the default 25 channels on 40-sample inputs.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ConvNet1D(nn.Module):
    """Conv1d(1, c, 5, s2) -> Conv1d(c, c, 3, s2) -> Conv1d(c, c, 3, s2) -> Linear(c * L', classes)."""

    def __init__(self, input_shape=(40,), num_classes: int = 10, channels: int = 25):
        super().__init__()
        length = math.prod(input_shape)
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        with torch.no_grad():
            n = self.features(torch.zeros(1, 1, length)).shape[1]
        self.head = nn.Linear(n, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return x.flatten(1)  # (B, channels * L')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.reshape(x.shape[0], 1, -1)))  # (B, classes)
