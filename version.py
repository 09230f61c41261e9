"""siq's version, in one place: pyproject.toml reads it from here, the package and generated banners import it."""

__version__ = "0.1.0"
