"""avsf: a reproduction of Audiovisual SlowFast Networks for Video Recognition."""

__version__ = "0.1.0"
