"""Jinja2 C templates and board support files, shipped as package data (found through importlib.resources)."""
