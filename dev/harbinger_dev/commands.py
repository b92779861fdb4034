"""The commands the harness adds to ``harbinger`` (entry-point group ``harbinger.commands``).

Kept apart from the command's code so that listing ``harbinger --help`` imports nothing heavy.
"""

from harbinger.cli import Command

CLUSTER = Command("cluster", "development: start or stop the local control plane (etcd, apiserver, scheduler, KWOK)",
                  "harbinger_dev.localcluster.cli", "add_arguments", "run")

IMAGES = Command("images", "development: build Harbinger's two images without Docker, as OCI archives "
                 "(needs root and debootstrap)",
                 "harbinger_dev.localcluster.imagebuild", "add_arguments", "run")
