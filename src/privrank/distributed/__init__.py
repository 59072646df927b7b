"""Scale-out on Ray: the privrank API as a Ray Serve deployment (:mod:`.ray_serve`); the Ray
fit engine (:mod:`.ray_engine`: a fit's sums over users as tasks over user partitions).

Ray is an optional dependency (``pip install 'privrank[ray]'``); it is imported only when a
function here is called.

Layer: above serving (Ray Serve wraps the serving app); may import serving and every layer
below it, never the CLI (contracts in ``pyproject.toml``).
"""

from privrank.distributed.ray_engine import RayEngine, RayEngineConfig, ensure_ray
from privrank.distributed.ray_serve import DEPLOYMENT_NAME, privrank_deployment, run_on_ray_serve

__all__ = [
    "DEPLOYMENT_NAME",
    "RayEngine",
    "RayEngineConfig",
    "ensure_ray",
    "privrank_deployment",
    "run_on_ray_serve",
]
