"""Scenarios written once and run on every backend (each backend's tests call them)."""
