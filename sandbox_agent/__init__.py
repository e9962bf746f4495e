"""The sandbox agent: one conversation's server, running inside its container."""

__version__ = "0.1.0"
