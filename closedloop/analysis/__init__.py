"""Analysis of sessions and recordings: calibration, evaluation, report, scoring,
benchmarks."""
