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
