"""``make demo``: the Harbinger story on a real install on the local cluster (``real``, its
steps in ``shop``), and a recorded day of it at 180x on KWOK nodes (``story``, ``--replay``)."""
