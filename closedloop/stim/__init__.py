"""Stimulation: commands, protocols, the safety guard and stimulator drivers."""
