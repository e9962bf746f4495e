"""The convoy gateway: one sandbox per conversation, behind one API."""

__version__ = "0.1.0"
