"""edgefuse: attention-fusion CNNs to int8 on phones and edge CPUs."""

__version__ = "0.1.0"
