"""The pure signal core: numpy in, numpy out; no I/O, no threads, no wall clock.

Every class here keeps its state across chunks so that the same samples fed in chunks
of any size produce identical output, to the bit and to the sample.
"""
