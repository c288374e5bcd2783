"""Labelers: one interface (texts -> labels) for the rule-based, BERT-style and LLM labelers."""
