"""Federated fedmf on Flower's deployment runtime (a SuperLink and SuperNodes over gRPC).

The same algorithm as the simulator (:mod:`privrank.federated.simulator`), with the devices in
SuperNode processes:

- :mod:`~privrank.federated.flower.devices`: node files and the device-side computation
  (no Flower import);
- :mod:`~privrank.federated.flower.rounds`: the server's rounds over a transport (no Flower
  import);
- :mod:`~privrank.federated.flower.job`: the job the ServerApp reads;
- :mod:`~privrank.federated.flower.messages`, :mod:`~privrank.federated.flower.server_app`,
  :mod:`~privrank.federated.flower.client_app`: the Flower side (the Message API);
- :mod:`~privrank.federated.flower.launch`: starting the SuperLink, SuperNodes and a run;
- :mod:`~privrank.federated.flower.waves`: an exchange's messages with at most ``W``
  outstanding (no Flower import);
- :mod:`~privrank.federated.flower.superexec`: one SuperExec for many local SuperNodes.

flwr runs in its own environment (``make flower-env``: ``.venv-flower``), because its pins clash
with the main environment's; this package imports nothing from flwr at import time.
"""
