"""Simulation: the simulated patient (EMG with scripted voluntary attempts)."""
