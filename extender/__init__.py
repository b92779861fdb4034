"""The kube-scheduler extender: places warm-up pods on nodes with bandwidth headroom.

Read top to bottom: ``wire`` (the extender v1 JSON), ``bandwidth`` (what pods ask and nodes
offer), ``state`` (the watch-fed picture), ``decide`` (filter and prioritize), ``answer``
(one call: decode, decide, encode), ``server`` (HTTP and the watches), ``cli``.
"""
