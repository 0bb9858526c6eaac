"""Accelerator backends: ``emulated`` (numpy, kernel spec v1 of docs/accelerator.md)."""
