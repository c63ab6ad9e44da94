"""Siaga 112 PBX: answers a city's 112 emergency line on Asterisk 22 ARI."""

__version__ = "0.1.0"
