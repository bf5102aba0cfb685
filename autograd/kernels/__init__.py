"""Hand-written kernels: one file each, forward and hand-derived backward side by side.

Each kernel is ONE node of the graph: its backward is written out (the derivation is
in the file's docstring, in the same symbols as the code), not recorded from smaller
operations. Shapes use B (batch), T (time), C (channels), nh (heads), hs (head size),
V (vocabulary), N (rows = B*T).

docs/derivations.md collects these derivations, with the math typeset, in the same
symbols, each section naming the function that implements it.
"""
