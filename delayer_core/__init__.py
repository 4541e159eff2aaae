"""A faithful PrefillDelayer with pluggable cross-DP sync paths.

The decision is pure and needs no torch (``delayer_core.decide``); the sync paths and the
delayer object import torch lazily, on first use.
"""

from .decision import (
    FIELDS,
    REASONS,
    STATUSES,
    DelayerConfig,
    DelayerState,
    GatherSummary,
    Outcome,
    decide,
)
from .shape import GatherShape

__all__ = [
    "FIELDS",
    "REASONS",
    "STATUSES",
    "DelayerConfig",
    "DelayerState",
    "GatherSummary",
    "Outcome",
    "decide",
    # lazily imported (torch):
    "PrefillDelayer",
    "PassExecutor",
    "LocalInfo",
    "SyncPath",
    "GatherShape",
    "PATHS",
    "path_class",
    "select_path",
    "build_delayer",
    "ServerArgs",
    "env_bool",
    "NCCL_FLAG",
]

_LAZY = {
    "PrefillDelayer": "delayer",
    "PassExecutor": "delayer",
    "LocalInfo": "delayer",
    "SyncPath": "paths.base",
    "PATHS": "paths",
    "path_class": "paths",
    "select_path": "selection",
    "build_delayer": "selection",
    "ServerArgs": "selection",
    "env_bool": "selection",
    "NCCL_FLAG": "selection",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
