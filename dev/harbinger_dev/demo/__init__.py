"""``make demo``: the whole Harbinger story on the real local control plane."""
