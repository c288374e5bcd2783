"""cxrlabel: structured labels from free-text chest X-ray reports, and proof of their quality."""

__version__ = "0.1.0"
