"""Encrypted scoring (CKKS): a server scores its catalogue for a user vector it cannot read.

See :mod:`privrank.privacy.crypto.he_scoring.protocol` for the protocol, its parameters and
who is trusted for what; :class:`HEClient` is the client's side, :class:`EncryptedScorer` the
server's. TenSEAL (``pip install 'privrank[he]'``) is imported when these are used.
"""

from privrank.privacy.crypto.he_scoring.client import HEClient
from privrank.privacy.crypto.he_scoring.protocol import HEParams, ScoreRequest, ScoreResponse
from privrank.privacy.crypto.he_scoring.server import EncryptedScorer

__all__ = ["EncryptedScorer", "HEClient", "HEParams", "ScoreRequest", "ScoreResponse"]
