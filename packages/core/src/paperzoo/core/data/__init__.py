"""Shared data plumbing: the base datamodule and the resumable, rank-aware sampler."""

from paperzoo.core.data.base import BaseDataModule
from paperzoo.core.data.sampler import ResumableSampler, ShardSampler

__all__ = ["BaseDataModule", "ResumableSampler", "ShardSampler"]
