"""Helpers every layer may use: the error root, log-safe text, secret redaction.

May import: the standard library only.
"""
