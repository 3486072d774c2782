"""Propagation: fill a volume from a few labeled slices (Pham et al. 2022; STCN, Cheng et al. 2021).

``core`` (the algorithm on arrays and a network), ``files`` (``semiseg propagate``: images in
their own geometry, interactive or automatic), ``baselines`` (nearest slice, shape-based
interpolation), ``triplets`` (the propagation network's training samples).
"""
