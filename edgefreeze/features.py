"""What the training loop consumes: stem activations, live or from the cache.

Both sources give the same thing for a batch of example indices: hidden states at the
freeze boundary (batch, seq, hidden) and their attention mask (batch, seq). The loop
never knows which one it was handed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from edgefreeze.backbones import Backbone
from edgefreeze.batching import Encoded


class LiveFeatures:
    """Runs the frozen stem on each batch (no gradients, eval mode)."""

    def __init__(self, encoded: Encoded, backbone: Backbone, boundary: int) -> None:
        self.encoded, self.backbone, self.boundary = encoded, backbone, boundary
        self.first_token = boundary == backbone.depth

    def lengths(self) -> np.ndarray:
        return np.ones(len(self.encoded), dtype=int) if self.first_token else self.encoded.lengths()

    def batch(self, indices: Sequence[int], device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {k: torch.from_numpy(v).to(device) for k, v in self.encoded.batch(indices).items()}
        with torch.no_grad():
            hidden = self.backbone.stem(inputs, self.boundary)
        mask = inputs["attention_mask"]
        return (hidden[:, :1], mask[:, :1]) if self.first_token else (hidden, mask)


class CachedFeatures:
    """Stored activations, one (tokens, hidden) array per example, padded per batch."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = arrays
        self.width = arrays[0].shape[1]
        self._lengths = np.array([a.shape[0] for a in arrays])
        # Head-only: one vector per example; one dense matrix makes a batch one gather.
        self._dense = (np.concatenate(arrays).astype(np.float32)
                       if np.all(self._lengths == 1) else None)

    def lengths(self) -> np.ndarray:
        return self._lengths

    def batch(self, indices: Sequence[int], device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._dense is not None:
            hidden = torch.from_numpy(self._dense[list(indices)]).unsqueeze(1)
            return hidden.to(device), torch.ones((len(indices), 1), dtype=torch.int64,
                                                  device=device)
        lengths = self._lengths[list(indices)]
        hidden = np.zeros((len(indices), lengths.max(), self.width), dtype=np.float32)
        mask = np.zeros((len(indices), lengths.max()), dtype=np.int64)
        for row, index in enumerate(indices):
            hidden[row, :lengths[row]] = self.arrays[index]
            mask[row, :lengths[row]] = 1
        return torch.from_numpy(hidden).to(device), torch.from_numpy(mask).to(device)
