"""Data: sources, label maps, group-aware splits and content fingerprints."""

from edgefreeze.data.dataset import LabelledData, Split, load_data

__all__ = ["LabelledData", "Split", "load_data"]
