"""EMG sources: the simulated patient, BrainFlow boards, LSL streams and XDF replay."""
