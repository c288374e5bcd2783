"""Metrics, significance tests and figures of the evaluation."""
