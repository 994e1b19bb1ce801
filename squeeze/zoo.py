"""Reference architectures used by the samples, the tests and the benchmarks.

Each takes ``input_shape`` (one example's shape, without the batch) and ``num_classes`` so
that the CLI can fill them from the data. Images are (C, H, W); a flat input is accepted by
all of them and reshaped where needed.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    """The fully connected network of Li et al. (2018): 784-200-200-10, D = 199,210 on MNIST."""

    def __init__(self, input_shape=(1, 28, 28), num_classes: int = 10, hidden: tuple[int, ...] = (200, 200)):
        super().__init__()
        sizes = [math.prod(input_shape), *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, F)
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x)  # (B, num_classes)


def _image_shape(input_shape) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) == 3:
        return shape
    side = math.isqrt(math.prod(shape))
    if len(shape) == 1 and side * side == shape[0]:
        return (1, side, side)
    raise ValueError(f"this architecture needs image input (C, H, W) or a flat square image, got input shape {list(shape)}")


class LeNet(nn.Module):
    """LeNet-5 as in Li et al. (2018): two 5x5 convolutions with max-pooling, then 120-84-classes.
    D = 44,426 on 28x28 MNIST."""

    def __init__(self, input_shape=(1, 28, 28), num_classes: int = 10):
        super().__init__()
        c, h, w = _image_shape(input_shape)
        self.shape = (c, h, w)
        self.conv1 = nn.Conv2d(c, 6, 5, padding=0 if h >= 20 else 2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=0 if h >= 20 else 2)
        with torch.no_grad():
            n = self.features(torch.zeros(1, c, h, w)).shape[1]
        self.fc1 = nn.Linear(n, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.shape)  # (B, C, H, W)
        x = self.features(x)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = None
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.skip is None else self.skip(x)))


class ResNet(nn.Module):
    """A small ResNet with BatchNorm: a 3x3 stem and one basic block per width."""

    def __init__(self, input_shape=(1, 28, 28), num_classes: int = 10, widths: tuple[int, ...] = (8, 16, 32)):
        super().__init__()
        c, h, w = _image_shape(input_shape)
        self.shape = (c, h, w)
        self.stem = nn.Sequential(nn.Conv2d(c, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, cin = [], widths[0]
        for i, cout in enumerate(widths):
            blocks.append(BasicBlock(cin, cout, 1 if i == 0 else 2))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x.reshape(x.shape[0], *self.shape)))  # (B, C', H', W')
        return self.head(x.mean(dim=(2, 3)))


class TransformerClassifier(nn.Module):
    """A small Transformer encoder: each image row (or each chunk of a flat input) is a token,
    embedded linearly, plus a learned position embedding; pre-norm encoder layers with
    multi-head attention and LayerNorm; mean-pooled into a linear head."""

    def __init__(self, input_shape=(1, 28, 28), num_classes: int = 10, dim: int = 32, heads: int = 4, layers: int = 2, tokens: int | None = None):
        super().__init__()
        total = math.prod(input_shape)
        if tokens is None:
            tokens = input_shape[-2] if len(input_shape) >= 2 else math.isqrt(total) or 1
        if total % tokens:
            raise ValueError(f"input of {total} values cannot be split into {tokens} tokens")
        self.tokens, self.width = tokens, total // tokens
        self.embed = nn.Linear(self.width, dim)
        self.position = nn.Embedding(tokens, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.tokens, self.width)  # (B, T, W)
        pos = torch.arange(self.tokens, device=x.device)
        h = self.encoder(self.embed(x) + self.position(pos))  # (B, T, dim)
        return self.head(self.norm(h.mean(dim=1)))


ARCHITECTURES = {"MLP": MLP, "LeNet": LeNet, "ResNet": ResNet, "TransformerClassifier": TransformerClassifier}
