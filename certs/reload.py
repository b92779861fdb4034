"""Serving TLS that follows certificate rotation without a restart.

``ssl.SSLContext.load_cert_chain`` may be called again on a live context: handshakes
after the call use the new pair, connections already open keep theirs. So rotation
is a periodic hash of the two files and a reload when it changes; no connection is
dropped and no listener is re-created.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from pathlib import Path

from harbinger.errors import InvalidInput

log = logging.getLogger(__name__)

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
CA_FILE = "ca.crt"


class ReloadingServerTLS:
    """An SSL server context over ``cert_dir/tls.crt`` and ``cert_dir/tls.key``."""

    def __init__(self, cert_dir: Path) -> None:
        self.cert_path = Path(cert_dir) / CERT_FILE
        self.key_path = Path(cert_dir) / KEY_FILE
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.reloads = 0
        self._digest = ""
        self.reload()

    def _current_digest(self) -> str:
        try:
            return hashlib.sha256(self.cert_path.read_bytes() + self.key_path.read_bytes()).hexdigest()
        except OSError as exc:
            raise InvalidInput(f"cannot read serving certificate: {exc.strerror}", source=str(exc.filename)) from exc

    def reload(self) -> bool:
        """Load the pair if it changed; returns whether it did. A half-written pair (the
        key of one rotation, the certificate of another) fails to load and is retried
        on the next check, while the old pair keeps serving."""
        digest = self._current_digest()
        if digest == self._digest:
            return False
        try:
            self.context.load_cert_chain(self.cert_path, self.key_path)
        except ssl.SSLError as exc:
            if not self._digest:
                raise InvalidInput(f"certificate and key do not load: {exc}", source=str(self.cert_path)) from exc
            log.warning("rotated certificate does not load yet (%s); keeping the previous one", exc)
            return False
        self._digest = digest
        self.reloads += 1
        log.info("serving certificate loaded from %s", self.cert_path)
        return True

    async def watch(self, interval: float) -> None:
        """Check the files every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(InvalidInput):
                self.reload()
