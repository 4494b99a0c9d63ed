"""dmnreid: Distributed Memory Network for person re-identification as a Flower app."""

__version__ = "0.1.0"
