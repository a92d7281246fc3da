"""Where raysight leans on Ray's private modules (Ray 2.60), so that an upgrade breaks here,
loudly, and not silently somewhere else. Each function says which Ray it was written for;
where the thing it needs is gone it warns once and does what it safely can.

(The Ray Data scheduling mends stay in workarounds.py, which documents their measurements.)
"""
from __future__ import annotations

import os
import sys
import warnings

# Ray's switch between "a node of a cluster" (its address) and "a local Ray" (loopback): on
# macOS and Windows Ray defaults to the latter; on Linux this variable set to 0 does the same.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_warned: set[str] = set()


def _warn_once(what: str) -> None:
    if what not in _warned:
        _warned.add(what)
        warnings.warn(f"raysight: {what} (written for Ray 2.60); please report it", RuntimeWarning, stacklevel=3)


def loopback_only() -> None:
    """Make the Ray this process starts (and every process that Ray starts: GCS, raylet,
    dashboard and its agents, workers, Serve's proxy) bind to 127.0.0.1 only. Ray 2.60 turns
    `--node-ip-address 127.0.0.1` back into the machine's address on Linux, but with
    ENABLE_RAY_CLUSTER false it uses loopback for the node (services.get_node_ip_address).
    The variable reaches Ray's own processes through their environment; the constant is read
    at import, so a Ray imported already is told directly."""
    os.environ[LOCAL_ONLY_ENV] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is None:
        return
    if not hasattr(constants, "ENABLE_RAY_CLUSTER"):
        _warn_once("ray._private.ray_constants.ENABLE_RAY_CLUSTER is gone: a local Ray may listen beyond "
                   "loopback")
        return
    constants.ENABLE_RAY_CLUSTER = False


def is_loopback_address(address: str) -> bool:
    """Whether a RAY_ADDRESS (`host:port`, `ray://host:port`, `http://host:port`) names a Ray
    on this machine's loopback: a driver joining it must then use loopback as its own node
    address too, or it looks for a raylet at the machine's address and waits forever."""
    from urllib.parse import urlparse

    host = urlparse(address if "://" in address else f"tcp://{address}").hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def local_only_env() -> dict[str, str]:
    """The environment for a `ray start --head` that must listen on loopback only."""
    return {LOCAL_ONLY_ENV: "0"}


def enable_token_auth_as_ray_start_does() -> None:
    """`ray start` turns Ray's token authentication on when a token exists (~/.ray/auth_token,
    which any earlier `ray.init` writes) and RAY_AUTH_MODE is unset; a process whose Jobs and
    Serve clients talk to such a cluster must then send it, so make the same decision here,
    with Ray's own function (Ray 2.5x-2.60)."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available)
    except ImportError:  # a Ray without token authentication: nothing to send
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def loopback_mode() -> bool:
    """Whether this process runs (or joins) a loopback-only Ray (loopback_only was called)."""
    return os.environ.get(LOCAL_ONLY_ENV) == "0"


# Each communication library's own switch for the interface its sockets use.
LOOPBACK_INTERFACE_ENV = {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}


def torch_config():
    """Ray Train's TorchConfig for this process's Ray. On a loopback-only Ray, torch's
    rendezvous uses a FileStore (every worker is on this machine) instead of the TCPStore that
    Ray Train's `_TorchBackend` sets up: a TCPStore server binds to every interface (`::`)
    whatever address it is given, and torch has no setting to change that. Gloo's and NCCL's
    own sockets go to loopback through LOOPBACK_INTERFACE_ENV (cluster.runtime_env). None
    (Ray's default) on a real cluster. Written for Ray 2.60's ray.train.torch.config."""
    if not loopback_mode():
        return None
    try:
        from ray.train.torch import config as torch_config_module
        backend_base = torch_config_module._TorchBackend
        setup, set_env = (torch_config_module._setup_torch_process_group,
                          torch_config_module._set_torch_distributed_env_vars)
        v1_group = torch_config_module.V1WorkerGroup
    except (ImportError, AttributeError):
        _warn_once("ray.train.torch.config changed: torch's rendezvous (a TCPStore) listens on every interface")
        return None

    class LoopbackTorchBackend(backend_base):
        def on_start(self, worker_group, backend_config):
            import tempfile
            import uuid

            import ray

            gpus = worker_group.get_resources_per_worker().get("GPU", 0)
            backend = backend_config.backend or ("nccl" if gpus else "gloo")
            if not isinstance(worker_group, v1_group):  # v1 sets them in on_training_start
                worker_group.execute(set_env)
            url = f"file://{os.path.join(tempfile.gettempdir(), f'raysight-pg-{uuid.uuid4().hex}')}"
            ray.get([worker_group.execute_single_async(i, setup, backend=backend, world_rank=i,
                                                       world_size=len(worker_group), init_method=url,
                                                       timeout_s=backend_config.timeout_s)
                     for i in range(len(worker_group))])

    class LoopbackTorchConfig(torch_config_module.TorchConfig):
        @property
        def backend_cls(self):
            return LoopbackTorchBackend

    return LoopbackTorchConfig()


def serve_grpc_on_loopback() -> None:
    """On a loopback-only Ray, Serve's gRPC servers on loopback too. Ray 2.60 binds each
    replica's inter-deployment gRPC server to `[::]:0` (serve/_private/replica.py) and the gRPC
    proxy to `[::]:port`, ignoring Ray's local-only mode and offering no setting; every Serve
    process on such a Ray is on this machine, so 127.0.0.1 reaches them all. Runs in each
    worker process (cluster.setup_worker), before any replica starts its server."""
    if not loopback_mode():
        return
    try:
        from ray.serve._private import default_impl, replica
    except ImportError:
        _warn_once("ray.serve._private.replica moved: Serve replicas may listen beyond loopback")
        return
    for module, name in ((replica, "add_port_to_grpc_server"), (default_impl, "add_grpc_address")):
        original = getattr(module, name, None)
        if original is None:
            _warn_once(f"ray.serve._private.{module.__name__.rsplit('.', 1)[-1]}.{name} is gone: Serve may "
                       "listen beyond loopback")
            continue
        if getattr(original, "_raysight", False):
            continue

        def on_loopback(server, address, _original=original):
            if address.startswith("[::]:") or address.startswith("0.0.0.0:"):
                address = "127.0.0.1:" + address.rsplit(":", 1)[1]
            return _original(server, address)

        on_loopback._raysight = True
        setattr(module, name, on_loopback)
