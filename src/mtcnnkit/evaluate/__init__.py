"""Evaluation of mtcnnkit detectors: detection and landmark accuracy on annotated sets."""
