"""Hostile corpora (SQL fixtures) and the comparators that check a restored copy against them."""
