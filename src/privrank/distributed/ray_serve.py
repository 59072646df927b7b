"""Run the privrank API on a Ray cluster with Ray Serve.

The same FastAPI app that ``privrank serve`` runs (:func:`privrank.serving.app.create_app`) is
wrapped in a Ray Serve deployment with :func:`ray.serve.ingress`. Every replica builds its own
app from the same :class:`~privrank.serving.ServeSettings` (the app is built *on* the replica,
so each one loads the model and opens the databases itself), and Ray Serve's proxies spread the
HTTP requests over the replicas, on one machine or many.

Install the extra (``pip install 'privrank[ray]'``) and, on a running cluster or locally::

    import ray
    from privrank.distributed import run_on_ray_serve
    from privrank.serving import ServeSettings

    ray.init()  # or ray.init(address="auto") on a cluster node
    settings = ServeSettings(
        store_dir="/shared/models",
        database_url="postgresql://privrank@db/privrank",
    )
    run_on_ray_serve(settings, host="0.0.0.0", port=8000, num_replicas=4)

Then ``curl -H "Authorization: Bearer $KEY" http://HOST:8000/v1/recommend -d ...`` exactly as
with ``privrank serve``: the endpoints, keys, errors and OpenAPI schema are the same.

What a cluster needs, because every replica runs on its own node:

- **One database for keys and events.** Use PostgreSQL (``database_url``); a SQLite file works
  only while every replica runs on the one machine that holds the file.
- **One model store on shared storage** (``store_dir`` on NFS or similar, or the same
  ``model_dir`` copied to every node). Each replica polls the store's ``ACTIVE.json``, so an
  activation through any replica (``POST /v1/models/{version}/activate``) reaches the others
  within ``refresh_interval_s``.
- **Rate limits are per replica** (as they are per worker with ``privrank serve --workers``):
  the effective limit of a key is ``rate_limit`` times the number of replicas.
- Ray Serve listens on ``host``; :func:`run_on_ray_serve` defaults to ``127.0.0.1``. Serve
  TLS and anything public through a reverse proxy, as with ``privrank serve``.
"""

from __future__ import annotations

from typing import Any

from privrank.errors import ConfigError
from privrank.serving.settings import ServeSettings, is_loopback

__all__ = ["DEPLOYMENT_NAME", "privrank_deployment", "run_on_ray_serve"]

DEPLOYMENT_NAME = "privrank"


def _serve():
    try:
        from ray import serve
    except ImportError as exc:
        raise ConfigError(
            f"running on Ray Serve needs the 'ray' extra ({exc.name} is not installed): "
            "pip install 'privrank[ray]'"
        ) from exc
    return serve


def _app_builder(settings: ServeSettings):
    """A function that builds the app; Ray Serve calls it on each replica."""
    payload = settings.model_dump_json()

    def build():
        from privrank.serving.app import create_app

        return create_app(ServeSettings.model_validate_json(payload))

    return build


def privrank_deployment(
    settings: ServeSettings,
    *,
    num_replicas: int = 1,
    ray_actor_options: dict[str, Any] | None = None,
    name: str = DEPLOYMENT_NAME,
):
    """A bound Ray Serve application serving the privrank API for ``settings``.

    Args:
        settings: What to serve, exactly as for ``privrank serve``.
        num_replicas: Replicas (Ray actors), each with its own copy of the model.
        ray_actor_options: Resources per replica (default one CPU).
        name: The deployment's name.

    Returns:
        A :class:`ray.serve.Application` for :func:`ray.serve.run` (or ``serve run`` configs).

    Raises:
        ConfigError: Ray Serve is not installed, or ``num_replicas`` < 1.
    """
    if num_replicas < 1:
        raise ConfigError(f"num_replicas must be >= 1. Got {num_replicas}")
    serve = _serve()
    ingress = serve.ingress(_app_builder(settings))

    class PrivrankAPI:
        """The privrank FastAPI app as a Ray Serve replica."""

    deployment = serve.deployment(
        ingress(PrivrankAPI),
        name=name,
        num_replicas=num_replicas,
        ray_actor_options=ray_actor_options or {"num_cpus": 1},
    )
    return deployment.bind()


def run_on_ray_serve(
    settings: ServeSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    num_replicas: int = 1,
    ray_actor_options: dict[str, Any] | None = None,
    app_name: str = "privrank",
    route_prefix: str = "/",
):
    """Start Ray Serve's HTTP proxy on ``host:port`` and deploy the privrank API.

    Ray must be initialised (``ray.init(...)``). Returns when every replica is ready. The
    insecure development mode is refused on a non-loopback ``host``, as ``privrank serve``
    refuses it.

    Returns:
        The deployment handle of the application.

    Raises:
        ConfigError: Ray Serve is missing, or ``insecure_dev`` on a non-loopback ``host``.
    """
    if settings.insecure_dev and not is_loopback(host):
        raise ConfigError(
            f"insecure_dev serves without API keys and is only allowed on a loopback "
            f"address, not {host!r}"
        )
    serve = _serve()
    serve.start(http_options={"host": host, "port": port})
    application = privrank_deployment(
        settings, num_replicas=num_replicas, ray_actor_options=ray_actor_options
    )
    return serve.run(application, name=app_name, route_prefix=route_prefix)
