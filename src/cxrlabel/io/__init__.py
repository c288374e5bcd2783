"""Readers and writers of the corpora and label files the pipeline consumes and produces."""
