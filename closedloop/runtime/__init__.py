"""The runtime: building devices from specs, and the closed loop that wires them."""
