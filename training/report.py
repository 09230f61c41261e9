"""Kept import path: the report lives in siq.training.experiments.report."""
from .experiments.report import *  # noqa: F401,F403
from .experiments.report import __all__  # noqa: F401
