"""CityWok: TV episodes and YouTube channels into audio-fingerprint and transcript search."""

__version__ = "0.1.0"
