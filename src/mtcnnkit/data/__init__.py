"""Datasets: annotation readers, training-sample generation and storage."""
