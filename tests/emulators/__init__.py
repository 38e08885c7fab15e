"""Device emulators for tests: real protocols on real (pseudo-terminal) ports, no hardware."""
