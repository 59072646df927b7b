"""Cryptographic privacy protocols: primitives from maintained libraries, protocols written here.

- :mod:`privrank.privacy.crypto.secagg`: secure aggregation (SecAgg+, Bell et al. CCS 2020):
  the server learns only the modular sum of the clients' quantised updates.
- :mod:`privrank.privacy.crypto.he_scoring`: encrypted scoring of a catalogue under CKKS
  (Microsoft SEAL through TenSEAL), for a client that keeps its user vector secret.

privrank writes the protocols here, never its own ciphers: key agreement, key derivation,
authenticated encryption and the pseudo-random generator come from ``cryptography``, and the
homomorphic encryption from SEAL (TenSEAL).
"""
