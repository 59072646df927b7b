"""Cryptographic privacy protocols, on primitives from maintained libraries (``cryptography``).

- :mod:`privrank.privacy.crypto.secagg`: secure aggregation (SecAgg+, Bell et al. CCS 2020):
  the server learns only the modular sum of the clients' quantised updates.

privrank writes the protocols here, never its own ciphers: key agreement, key derivation,
authenticated encryption and the pseudo-random generator all come from ``cryptography``.
"""
