"""Stores, delivery zones, the catalogue, inventory lots and nearest-stocked-store search."""
