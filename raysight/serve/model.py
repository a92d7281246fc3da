"""One served model on this process's device: request bytes → prepared pixels → one forward
pass per batch → rendered answers. The endpoint's replicas and batch transform's Ray Data
actors both run this, so an image gets the same answer either way."""
from __future__ import annotations

import logging
import time
from typing import Any

from raysight import algorithms, images, storage
from raysight.serve.codecs import MAX_PAYLOAD, HTTPError, check_content_type, choose_accept

logger = logging.getLogger("ray.serve")


def use_cpus(num_cpus: float) -> None:
    """torch (and OpenCV) threads = the CPUs Ray gave this process, so replicas sharing a
    node do not oversubscribe it."""
    import torch

    torch.set_num_threads(max(1, round(num_cpus)))
    images.cv2()


def assigned(resource: str) -> float | None:
    """How much of `resource` Ray gave this worker process; None outside a Ray worker."""
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return None
    return float(ray.get_runtime_context().get_assigned_resources().get(resource, 0.0))


class ModelRunner:
    def __init__(self, uri: str):
        import torch

        tic = time.perf_counter()
        self.uri = uri
        self.algo, net, self.meta = algorithms.load_model(uri)
        gpus = assigned("GPU")
        gpu = torch.cuda.is_available() and (gpus is None or gpus > 0)
        self.predictor = self.algo.predictor(net, self.meta)
        if gpu:
            net = net.to("cuda")
            if getattr(self.predictor, "half_precision", True):
                net = net.half()  # inference only: batch norm and softmax are safe in fp16
            self.predictor.model = net
        self.accepts = self.predictor.accepts
        self.device = "cuda" if gpu else "cpu"
        self.load_seconds = time.perf_counter() - tic
        logger.info("loaded %s model %s in %.2f s on %s", self.algo.name, uri, self.load_seconds,
                    "cuda" if gpu else "cpu")

    def prepare(self, body: bytes, content_type: str | None, where: str = "request body"):
        """Bytes of one image → (pixels, original size); HTTPError 400/413/415 for what cannot be one."""
        check_content_type(content_type)
        if not body:
            raise HTTPError(400, f"empty {where}; send one encoded image")
        if len(body) > MAX_PAYLOAD:
            raise HTTPError(413, f"payload of {len(body)} bytes exceeds {MAX_PAYLOAD}")
        try:
            return self.predictor.prepare(self.predictor.decode(body, where))
        except images.UnsupportedImage as exc:
            raise HTTPError(415, str(exc)) from None
        except images.BadImage as exc:
            raise HTTPError(400, str(exc)) from None

    def accept(self, header: str | None) -> str:
        return choose_accept(header, self.accepts)

    def predict(self, prepared: list) -> list[Any]:
        return self.predictor.predict_prepared(prepared)

    def render(self, result, accept: str) -> tuple[bytes, str]:
        return self.predictor.render(result, accept)

    def custom_attributes(self, attributes: str | None) -> str | None:
        """What the predictor sends back in X-Amzn-SageMaker-Custom-Attributes (None: nothing)."""
        return self.predictor.custom_attributes(attributes)


def model_under(prefix: str, target: str | None) -> str:
    """The URI of a multi-model endpoint's target model, or HTTPError naming the problem."""
    if not target:
        raise HTTPError(400, "this is a multi-model endpoint: name the model in the "
                             "X-Amzn-SageMaker-Target-Model header (e.g. digits-v2.tar.gz)")
    parts = target.split("/")
    if not target.endswith(".tar.gz") or target.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise HTTPError(400, f"target model '{target}' must be a relative path ending in .tar.gz under {prefix}")
    uri = storage.join(prefix, target)
    if not storage.exists(uri):
        raise HTTPError(404, f"target model '{target}' is not under {prefix}")
    return uri
