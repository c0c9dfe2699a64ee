"""A Jupyter wrapper kernel for kvlab: runs `kvlab --serve NONCE` and drives it over pipes."""

__version__ = "0.1.0"
