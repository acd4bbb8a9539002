"""Shared task modules: one per external system, plus pure domain modules."""
