"""One scheduler call, top to bottom: decode the ExtenderArgs, decide, encode the answer.

:class:`Extender` works on bytes in and (status, bytes) out, so the HTTP layer stays a
thin shell and tests and benchmarks can call exactly what the scheduler calls.

What the extender assumes about the scheduler's choice: it does not bind, so it never
sees the final decision directly. When its filter leaves one node, the scheduler uses
that node; otherwise the extender assumes the node it scored highest in prioritize
(its weight in the KubeSchedulerConfiguration is set so that its score dominates).
Either way the watch corrects the guess within moments of the real binding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from extender import metrics
from extender.bandwidth import is_checked, pod_demand
from extender.decide import filter_nodes, score_nodes
from extender.state import ClusterState, service_key
from extender.wire import (
    MAX_EXTENDER_PRIORITY,
    ExtenderArgs,
    decode_args,
    encode_error,
    encode_filter_result,
    encode_priorities,
)
from harbinger.errors import InvalidInput

log = logging.getLogger(__name__)

Answer = tuple[int, bytes]


class Extender:
    def __init__(self, state: ClusterState, *, admit_undeclared: bool = True) -> None:
        self.state = state
        #: Whether nodes that declare no bandwidth may take pods that need some.
        self.admit_undeclared = admit_undeclared

    def filter(self, body: bytes) -> Answer:
        return self._timed("filter", self._filter, body)

    def prioritize(self, body: bytes) -> Answer:
        return self._timed("prioritize", self._prioritize, body)

    def _timed(self, verb: str, decide: Callable[[ExtenderArgs], tuple[str, bytes]], body: bytes) -> Answer:
        started = time.perf_counter()
        try:
            args = decode_args(body)
            outcome, answer = decide(args)
            status = 200
        except InvalidInput as exc:
            outcome, status, answer = "bad_request", 400, encode_error(str(exc))
        except Exception:  # a bug must cost one pod its bandwidth check, not the scheduler
            # No opinion (every node passes, no score), as if the extender were absent: never a 5xx.
            log.exception("%s failed; answering with no opinion", verb)
            outcome, status, answer = "error", 200, self._no_opinion(verb, body)
        metrics.REQUESTS.labels(verb=verb, outcome=outcome).inc()
        metrics.LATENCY.labels(verb=verb).observe(time.perf_counter() - started)
        return status, answer

    @staticmethod
    def _no_opinion(verb: str, body: bytes) -> bytes:
        if verb != "filter":
            return b"[]"
        try:
            names = decode_args(body).NodeNames or []
        except Exception:  # decoding already succeeded once; this is a last resort
            names = []
        return encode_filter_result(names)

    def _filter(self, args: ExtenderArgs) -> tuple[str, bytes]:
        assert args.Pod is not None and args.NodeNames is not None  # decode_args checked both
        names = args.NodeNames
        meta = args.Pod.metadata
        if not is_checked(meta.annotations):
            return "fast_path", encode_filter_result(names)
        try:
            demand = pod_demand(meta.annotations)
        except InvalidInput as exc:
            # The pod's own annotation is broken: it stays Pending with a message saying
            # which one, rather than landing where its bandwidth was never checked.
            metrics.NODES_REJECTED.labels(reason="bad_pod_annotation").inc(len(names))
            return "checked", encode_filter_result([], unresolvable=dict.fromkeys(names, str(exc)))
        state = self.state
        state.expire()
        state.forget(meta.uid)
        decision = filter_nodes(state, names, demand, admit_undeclared=self.admit_undeclared)
        for reason, count in decision.reasons.items():
            metrics.NODES_REJECTED.labels(reason=reason).inc(count)
        if len(decision.passed) == 1:
            # kube-scheduler skips prioritize when one node is left: this is the placement.
            state.assume(meta.uid, decision.passed[0], demand,
                         service_key(meta.namespace, meta.labels, meta.annotations))
        return "checked", encode_filter_result(decision.passed, decision.failed, decision.unresolvable)

    def _prioritize(self, args: ExtenderArgs) -> tuple[str, bytes]:
        assert args.Pod is not None and args.NodeNames is not None
        names = args.NodeNames
        meta = args.Pod.metadata
        if not is_checked(meta.annotations) or not names:
            # No opinion: an empty list adds nothing to any node's score.
            return "fast_path", b"[]"
        try:
            demand = pod_demand(meta.annotations)
        except InvalidInput:
            return "fast_path", b"[]"  # filter has already turned every node down
        state = self.state
        state.expire()
        state.forget(meta.uid)
        service = service_key(meta.namespace, meta.labels, meta.annotations)
        blended, known = score_nodes(state, names, demand, service)
        if known.any() and (demand or service is not None):
            best = int(np.argmax(np.where(known, blended, -1.0)))
            state.assume(meta.uid, names[best], demand, service)
        scores = np.rint(blended * MAX_EXTENDER_PRIORITY).astype(np.int64).tolist()
        return "checked", encode_priorities(names, scores)
