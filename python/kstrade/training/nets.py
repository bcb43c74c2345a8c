"""The two direction models, small on purpose (minutes to train on 2 CPU cores, files of a few
hundred kB). Both take a window of scaled feature vectors (batch, window, features), oldest
first, and return class probabilities (DOWN, FLAT, UP): softmax is part of the exported graph,
so the ONNX file answers in probabilities. Imports torch: only the `train` command loads this."""

from __future__ import annotations

import torch
from torch import nn


class DirectionLSTM(nn.Module):
    """Per-symbol model: a unidirectional LSTM over the window, the last step's state -> 3 classes."""

    def __init__(self, features: int, hidden: int = 32, layers: int = 1) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, 3)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)


class DirectionTransformer(nn.Module):
    """Multi-symbol model: one encoder trained on every symbol's windows (each symbol scaled
    with its own training statistics), learned positions, the last step's encoding -> 3 classes."""

    def __init__(self, features: int, window: int, d_model: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(features, d_model)
        self.position = nn.Parameter(torch.zeros(1, window, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=2 * d_model, dropout=0.1, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 3)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(x) + self.position)
        return self.head(h[:, -1, :])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)


class LastStepLogistic(nn.Module):
    """The logistic baseline: multinomial logistic regression on the window's last feature
    vector (what a model with no memory and no nonlinearity can get from the same features)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.head = nn.Linear(features, 3)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, -1, :])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)
