"""Certificates with ``cryptography``: a small CA, serving sets, CA bundles, and putting
them on the cluster (Secret, caBundle). See README.md."""
