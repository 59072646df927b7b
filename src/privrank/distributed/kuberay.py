"""The Ray Serve application builder a KubeRay RayService names in its ``serveConfigV2``.

``import_path: privrank.distributed.kuberay:build_app`` with ``args`` such as
``{model_dir: /shared/privrank/models/current, num_replicas: 2}`` serves the privrank API
(:func:`privrank.distributed.ray_serve.privrank_deployment`) exactly as ``privrank serve``
would with the same settings. Secrets never appear in ``args``: the serving database URL comes
from ``PRIVRANK_SERVE_DATABASE_URL``, which the manifests take from a Kubernetes Secret.
"""

from __future__ import annotations

from typing import Any

from privrank.distributed.ray_serve import privrank_deployment
from privrank.errors import ConfigError
from privrank.serving.settings import ServeSettings

__all__ = ["build_app"]

_SERVE_ARGS = {"num_replicas", "num_cpus"}


def build_app(args: dict[str, Any]) -> Any:
    """A bound Ray Serve application from a RayService's ``args``.

    Args:
        args: :class:`~privrank.serving.ServeSettings` fields (``model_dir``, ``store_dir``,
            ``rate_limit``, ...; ``database_url`` is refused, it is a secret) plus
            ``num_replicas`` and ``num_cpus`` (per replica).

    Raises:
        ConfigError: ``database_url`` in ``args``, or invalid settings.
    """
    if "database_url" in args:
        raise ConfigError(
            "RayService args: database_url is a secret; set PRIVRANK_SERVE_DATABASE_URL from a "
            "Kubernetes Secret instead"
        )
    settings = ServeSettings(**{k: v for k, v in args.items() if k not in _SERVE_ARGS})
    return privrank_deployment(
        settings,
        num_replicas=int(args.get("num_replicas", 1)),
        ray_actor_options={"num_cpus": float(args.get("num_cpus", 1))},
    )
