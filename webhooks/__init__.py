"""The mutating admission webhook: AdmissionReview v1 in, JSONPatch out (see README.md)."""
