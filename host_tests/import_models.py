"""Models written the way PyTorch users write them, their data as npz files, and brief plain-PyTorch training:
shared by the import tests (test_import.py, test_import_residual.py)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class SeparableNet(nn.Module):
    """A custom module: conv + batch norm + relu6, a depthwise-separable block (depthwise 3x3, batch norm, relu,
    pointwise 1x1, batch norm, relu), global average pool, flatten, dropout, linear."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(8)
        self.pointwise = nn.Conv2d(8, 16, 1, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = nn.functional.relu6(self.stem_bn(self.stem(x)))
        x = torch.relu(self.depthwise_bn(self.depthwise(x)))
        x = torch.relu(self.pointwise_bn(self.pointwise(x)))
        return self.fc(self.drop(torch.flatten(self.pool(x), 1)))


def sequential_cnn(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 32),
                         nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, classes))


def signal_cnn(classes: int = 3) -> nn.Module:
    """1-D: conv1d + batch norm + relu, strided conv1d + relu, average pool, global average pool, linear."""
    return nn.Sequential(nn.Conv1d(2, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Conv1d(8, 12, 3, stride=2, padding=1), nn.ReLU(), nn.AvgPool1d(2),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(12, classes))


def signals(n: int = 450, length: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-channel signals of three classes (sine frequency 1, 2 or 3 per window, random phase, noise) as uint8
    codes [N, 2, 1, L] (the npz layout of a C-channel signal) and labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    t = np.arange(length) / length
    phase = rng.uniform(0, 2 * np.pi, (n, 2, 1))
    wave = np.sin(2 * np.pi * (y[:, None, None] + 1) * t + phase) + 0.2 * rng.normal(size=(n, 2, length))
    x = np.floor(np.clip((wave + 1.5) / 3, 0, 1) * 255 + 0.5).astype(np.uint8)
    return x[:, :, None, :], y


def write_npz(path, train_x, train_y, test_x, test_y) -> str:
    np.savez(path, x_train=train_x, y_train=train_y, x_test=test_x, y_test=test_y)
    return f"npz:{path}"


def as_input(codes: np.ndarray, one_d: bool = False) -> torch.Tensor:
    """uint8 codes as the network sees them (code / 256); a 1-D model takes [N, C, L]."""
    x = torch.as_tensor(codes).float() / 256
    return x[:, :, 0] if one_d else x


def train_briefly(model: nn.Module, x: torch.Tensor, y: np.ndarray, epochs: int = 6, seed: int = 0) -> nn.Module:
    """Plain PyTorch: Adam on cross-entropy, minibatches of 32; returns the model in eval mode."""
    torch.manual_seed(seed)
    labels = torch.as_tensor(y, dtype=torch.long)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 32):
            batch = order[start:start + 32]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), labels[batch]).backward()
            optimizer.step()
    return model.eval()
