"""Cryptographic privacy protocols: primitives from maintained libraries, protocols written here.

- :mod:`privrank.privacy.crypto.he_scoring`: encrypted scoring of a catalogue under CKKS
  (Microsoft SEAL through TenSEAL), for a client that keeps its user vector secret.
"""
