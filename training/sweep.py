"""Kept import path: the sweep lives in siq.training.experiments.sweep."""
from .experiments.sweep import *  # noqa: F401,F403
from .experiments.sweep import __all__  # noqa: F401
