"""Stimulator drivers: the simulated stimulator, LSL markers, RehaStim2."""
