"""Placeholder: operators are being written."""
