"""The package version, in a leaf module: stages record it without importing the facade
(``unirec/__init__.py`` reaches every stage)."""

__version__ = "0.1.0"
