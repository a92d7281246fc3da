"""The algorithm contract: what an algorithm supplies, and the shared steps around it.

An algorithm supplies only what differs (ARCHITECTURE.md, "The algorithm contract"):
hyperparameter rows (`shared_rows` extended), `index_rows` of an images channel,
a `Decode` (label of a record, decode/augment of one image, label collation), the
network, a `criterion` (loss and its terms), `meter`s, and a `Predictor`'s answers.
The template steps here do the rest: channel sets, the split loop, the RecordIO and
image preludes of decoding, incremental and pretrained weights, the last batch step,
sums reduced across workers, the predictor's resize + normalize + forward.

Nothing here imports torch or Ray at module level: validating a request and
`raysight hyperparameters` stay light.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol

import numpy as np

from raysight import data, images
from raysight.errors import ClientError
from raysight.formats import RECORDIO, accepted_channel_types, is_image_type, recordio
from raysight.algorithms.rows import (  # noqa: F401 - part of the contract algorithms import from here
    RUNTIME_OPTIONAL, RUNTIME_REQUIRED, setting, shared_rows, with_rows)
from raysight.hyperparams import Param

SPLITS = ("train", "validation")
JSON, JSONLINES = "application/json", "application/jsonlines"
SERVED_FORMATS = ("JPEG", "PNG")  # what SageMaker's built-in algorithms take for inference

def warn_if_async(hp: dict[str, Any]) -> None:
    """kv_store=dist_async is accepted (SageMaker's value) but cannot be honoured."""
    if hp.get("kv_store") == "dist_async":
        import warnings

        warnings.warn("kv_store=dist_async runs synchronously: PyTorch DDP has no asynchronous parameter server",
                      stacklevel=3)


# -- the three run-time protocols ---------------------------------------------------------
class DecodeOp(Protocol):
    """A Ray Data map_batches op: a batch of records or index rows → uint8 NHWC images."""

    deterministic: bool  # nothing random: the channel may be decoded once (data.decoded_once)
    row_bytes: int  # decoded bytes per row, for the decode-once budget

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Meter(Protocol):
    """Metrics of one split on one worker; compute() reduces across workers (every
    worker calls it), so each sample counts once."""

    def update(self, outputs, batch: dict, terms: dict | None = None) -> None: ...

    def local(self) -> dict[str, float]: ...

    def compute(self) -> dict[str, float]: ...


class PredictorProtocol(Protocol):
    """Batch-first: a list of decoded images in, one answer per image out."""

    accepts: tuple[str, ...]

    def decode(self, body: bytes, where: str) -> Any: ...

    def prepare(self, picture) -> tuple[np.ndarray, tuple[int, int]]: ...

    def predict_prepared(self, prepared: list) -> list[Any]: ...

    def predict_batch(self, pictures: list) -> list[Any]: ...

    def custom_attributes(self, attributes: str | None) -> str | None: ...

    def render(self, result: Any, accept: str) -> tuple[bytes, str]: ...


# -- template steps -------------------------------------------------------------------------
class Decode:
    """The shared half of every DecodeOp: RecordIO records (IRHeader + image) or index
    rows (uri + label) → decoded RGB images → `decode_one` → uint8 (N, height, width, 3).
    Subclasses set height/width/deterministic/row_bytes and supply record_label,
    decode_one and collate."""

    height: int
    width: int
    deterministic: bool = False
    row_bytes: int = 0
    random: bool = False  # decode_one gets an rng
    seed: int | None = None  # ShuffleConfig.Seed: each batch's augmentation drawn from (seed, its rows)

    def __init__(self, hp: dict[str, Any], training: bool, cache: str | None = None):
        self.training = training
        self.cache = cache  # file mode: node-local copies; None streams (pipe mode)

    def record_label(self, label: np.ndarray, where: str):
        """A RecordIO record's label, checked (raise ClientError naming `where`)."""
        raise NotImplementedError

    def decode_image(self, raw: bytes, where: str):
        """An image's bytes → an RGB PIL image (raise images.BadImage naming `where`)."""
        return images.decode_rgb(raw, where)

    def decode_one(self, image, label, where: str, rng) -> tuple[np.ndarray, Any]:
        """One decode_image result and its label → (uint8 HxWx3 pixels, label)."""
        raise NotImplementedError

    def collate(self, labels: list) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "record" in batch:
            where = [f"{s} record at byte {o}" for s, o in zip(batch["source"], batch["offset"])]
            records = [recordio.unpack_image(bytes(r), w) for r, w in zip(batch["record"], where)]
            labels = [self.record_label(r.label, w) for r, w in zip(records, where)]
            blobs, ids = [r.image for r in records], [r.id for r in records]
            keys = list(batch["offset"])
        else:  # index rows: labels were checked when the rows were built
            where, blobs = [str(u) for u in batch["uri"]], data.read_all(batch["uri"], self.cache)
            labels, ids = list(batch["label"]), list(batch["id"])
            keys = ids
        seed = self._batch_seed(keys)
        rng = np.random.default_rng(seed) if self.random else None
        if seed is not None and not self.deterministic:
            import torch  # torchvision's random transforms draw from torch's generator

            torch.manual_seed(seed)
        out = np.empty((len(blobs), self.height, self.width, 3), dtype=np.uint8)
        kept = []
        for i, (raw, label, w) in enumerate(zip(blobs, labels, where)):
            try:
                image = self.decode_image(raw, w)
            except images.BadImage as exc:
                raise ClientError(str(exc)) from None
            if "size" in batch:  # labels normalised by a declared size (detection annotations)
                _check_declared_size(image, batch["size"][i], batch["annotation"][i], w)
            out[i], label = self.decode_one(image, label, w, rng)
            kept.append(label)
        return {"image": out, "label": self.collate(kept), "id": np.asarray(ids, dtype=np.int64)}

    def _batch_seed(self, keys) -> int | None:
        """Seeded jobs: a batch's random draws depend on the seed and which rows it holds
        (a seeded shuffle gives each epoch new batches, so new draws), never on the process."""
        if self.seed is None:
            return None
        return int(np.random.SeedSequence([self.seed, len(keys), *map(int, keys[:8])]).generate_state(1)[0])


def _check_declared_size(image, size, annotation: str, where: str) -> None:
    width, height = (int(v) for v in size)
    if image.size != (width, height):
        raise ClientError(f"{annotation}: image_size {width}x{height} disagrees with {where}, which is "
                          f"{image.size[0]}x{image.size[1]}")


class SumMeter:
    """A meter that keeps a vector of sums, all-reduced across workers in compute();
    subclasses give `width`, `row(outputs, batch, terms)` and `finish(sums)`."""

    width: int = 2

    def __init__(self):
        self.sums = None

    def row(self, outputs, batch, terms) -> list:
        raise NotImplementedError

    def finish(self, sums: list[float]) -> dict[str, float]:
        raise NotImplementedError

    def update(self, outputs, batch, terms=None) -> None:
        import torch

        row = torch.stack([torch.as_tensor(r, device=outputs.device).detach().float() for r in
                           self.row(outputs, batch, terms or {})])
        self.sums = row if self.sums is None else self.sums + row

    def local(self) -> dict[str, float]:
        """This worker's running values, without the split prefix (no collective: safe to
        call on one rank)."""
        sums = [float(s) for s in self.sums] if self.sums is not None else [0.0] * self.width
        return {k.split(":", 1)[-1]: v for k, v in self.finish(sums).items()}

    def compute(self) -> dict[str, float]:
        import torch

        from raysight import collectives

        # Every worker contributes a vector of the same width, even one that saw no
        # samples (an exact validation split can leave a worker empty).
        sums = collectives.all_sum(self.sums.cpu() if self.sums is not None else torch.zeros(self.width))
        return self.finish([float(s) for s in sums])


class Predictor:
    """The shared half of serving: a decoded image → `prepare` (resized to the network input,
    no crop, aspect not kept, as SageMaker's built-ins) → `predict_prepared` (one forward pass
    for the whole batch) → `answers`. Serving and batch transform both run these steps, so an
    image gets the same answer alone, in a dynamic batch, or in a transform job. JSON Lines
    is `{"prediction": ...}` on one line for every algorithm."""

    accepts: tuple[str, ...] = (JSON, JSONLINES)

    def __init__(self, model, meta: dict[str, Any], input_shape: tuple[int, int, int]):
        self.model = model.eval()
        self.hp = meta["hyperparameters"]
        _, self.height, self.width = input_shape

    def decode(self, body: bytes, where: str):
        """Request bytes → an RGB image, JPEGs decoded at the smallest DCT scale that still
        covers the network input (raises images.BadImage)."""
        return images.decode_rgb(body, where, draft=max(self.height, self.width), formats=SERVED_FORMATS)

    def prepare(self, picture) -> tuple[np.ndarray, tuple[int, int]]:
        """A decoded image → (uint8 HxWx3 network input, the original (width, height))."""
        full = picture.info.get("full_size", picture.size)
        pixels = images.resize(np.asarray(picture), (self.width, self.height), extent=full)
        return pixels, full

    def predict_prepared(self, prepared: list[tuple[np.ndarray, tuple[int, int]]]) -> list[Any]:
        import torch

        param = next(self.model.parameters(), None)
        device, dtype = (param.device, param.dtype) if param is not None else ("cpu", torch.float32)
        pixels = torch.from_numpy(np.stack([p for p, _ in prepared])).to(device)
        with torch.inference_mode():
            outputs = self.model(images.normalize(pixels).to(dtype))
        return self.answers(outputs.float(), [size for _, size in prepared])

    def predict_batch(self, pictures: list) -> list[Any]:
        return self.predict_prepared([self.prepare(p) for p in pictures])

    def custom_attributes(self, attributes: str | None) -> str | None:
        """The X-Amzn-SageMaker-Custom-Attributes to answer with, given the request's (None: none;
        the built-ins, as SageMaker's, send none back)."""
        return None

    def answers(self, outputs, sizes: list[tuple[int, int]]) -> list[Any]:
        """The batch's network outputs → one answer per image (override to batch the work)."""
        return [self.answer(out, size) for out, size in zip(outputs, sizes)]

    def answer(self, output, size: tuple[int, int]) -> Any:
        """One image's network output (and its original width, height) → its answer."""
        raise NotImplementedError

    def prediction(self, result) -> Any:
        """What `{"prediction": ...}` holds."""
        return result

    def render_json(self, result, accept: str) -> bytes:
        return json.dumps(result).encode()

    def render(self, result, accept: str) -> tuple[bytes, str]:
        if accept == JSONLINES:
            return (json.dumps({"prediction": self.prediction(result)}) + "\n").encode(), JSONLINES
        return self.render_json(result, accept), JSON


@dataclass
class TrainingData:
    """What `Algorithm.datasets` hands the driver: Ray datasets keyed "train"/"validation"
    (a list of per-worker datasets for a ShardedByS3Key train channel), and run-time state
    derived from the data that the criterion needs (e.g. class weights)."""

    datasets: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)


# -- the algorithm ---------------------------------------------------------------------------
class Algorithm:
    """One algorithm. Subclasses set the class attributes and override the methods
    marked `supplied`; `check_contract` (run by register) says what is missing."""

    name: ClassVar[str] = ""
    hyperparameters: ClassVar[list[Param]] = []
    objective: ClassVar[str] = ""  # the tuning objective (maximised), e.g. "validation:accuracy"
    tuning_metrics: ClassVar[tuple[str, ...]] = ()  # metrics a tuning job may optimise
    artifact_prefix: ClassVar[str] = ""  # params file prefix inside model.tar.gz
    architecture_keys: ClassVar[tuple[str, ...]] = ()  # must match for incremental training
    weight_decay_optimizers: ClassVar[tuple[str, ...]] = ("sgd", "nag")  # where weight_decay applies
    log_every_batches: ClassVar[int] = 20  # how often log_batch lines are written
    image_index_channels: ClassVar[tuple[str, ...]] = ()  # the train/validation index channels of images
    manifest_label: ClassVar[str] = "label"  # what the second AttributeNames entry holds, for messages
    decoder: ClassVar[type[Decode] | None] = None  # supplied: the Decode subclass

    SUPPLIED = ("build_model", "input_shape", "criterion", "meter", "predictor")

    def check_contract(self) -> None:
        """Every name and method the shared runtime relies on, or a TypeError naming what is missing."""
        problems = [f"class attribute '{a}' is empty" for a in ("name", "objective", "artifact_prefix")
                    if not getattr(self, a)]
        declared = {p.name for p in self.hyperparameters}
        problems += [f"hyperparameter '{n}' (read by the shared runtime) is not declared"
                     for n in RUNTIME_REQUIRED if n not in declared]
        if self.objective and self.objective not in self.tuning_metrics:
            problems.append(f"objective '{self.objective}' is not one of tuning_metrics {self.tuning_metrics}")
        if self.decoder is None or not issubclass(self.decoder, Decode):
            problems.append("decoder must be a subclass of algorithms.base.Decode")
        problems += [f"method '{m}' is not supplied" for m in self.SUPPLIED
                     if getattr(type(self), m) is getattr(Algorithm, m)]
        if self.image_index_channels and type(self).index_rows is Algorithm.index_rows:
            problems.append("image_index_channels are declared but index_rows is not supplied")
        if problems:
            raise TypeError(f"algorithm {type(self).__name__}: " + "; ".join(problems))

    # -- request -----------------------------------------------------------------
    def check(self, hp: dict[str, Any], job) -> list[str]:
        """Cross-field and channel problems (each a message); [] when fine."""
        return self.channel_problems(job)

    def channel_problems(self, job) -> list[str]:
        """SageMaker's channel sets: train + validation as RecordIO, as augmented manifests,
        or as images plus `image_index_channels`; a `model` channel in File mode."""
        channels = job.channels
        problems = []
        if "model" in channels and channels["model"].input_mode != "File":
            problems.append("channel 'model' must use InputMode File")
        for split in SPLITS:
            if split not in channels:
                return problems + [f"channel '{split}' is required (got: {', '.join(channels) or 'none'})"]
        manifests = [c for c in SPLITS if channels[c].s3_data_type == "AugmentedManifestFile"]
        if manifests:
            problems += [f"channel '{c}' (AugmentedManifestFile) needs AttributeNames [image attribute, "
                         f"{self.manifest_label} attribute], got {channels[c].attribute_names}" for c in manifests
                         if len(channels[c].attribute_names) != 2]
            if len(manifests) == 1:
                problems.append("train and validation must both be augmented manifests")
            return problems
        for split in SPLITS:
            mime = channels[split].mime
            if not (is_image_type(mime) or mime == RECORDIO):
                problems.append(f"channel '{split}' content type '{channels[split].content_type}' names no input "
                                f"format raysight reads; accepted: {accepted_channel_types()}")
        if problems:
            return problems
        if is_image_type(channels["train"].mime):
            missing = [c for c in self.image_index_channels if c not in channels]
            if missing:
                problems.append(f"content type '{channels['train'].mime}' needs channels "
                                f"{', '.join(SPLITS + self.image_index_channels)}; missing {', '.join(missing)}")
        return problems

    def input_format(self, job) -> str:
        """One log line: the input format each split is read in, and why (what decided it)."""
        parts = []
        for split in SPLITS:
            channel = job.channels.get(split)
            if channel is None:
                continue
            given = f"ContentType '{channel.content_type}'"
            if channel.s3_data_type == "AugmentedManifestFile":
                parts.append(f"{split}: augmented manifest (S3DataType AugmentedManifestFile; {given} is read "
                             "only for its label-format)")
            elif channel.mime == RECORDIO:
                parts.append(f"{split}: RecordIO ({given})")
            else:
                index = dict(zip(SPLITS, self.image_index_channels)).get(split)
                parts.append(f"{split}: images + channel '{index}' ({given} is an image type; the index "
                             "channel's ContentType is not read)")
        return "Input format: " + "; ".join(parts)

    @staticmethod
    def image_format(job) -> bool:
        """True for images + index channels (not RecordIO, not manifests)."""
        train = job.channels.get("train")
        return train is not None and train.s3_data_type != "AugmentedManifestFile" and is_image_type(train.mime)

    # -- model (supplied) -----------------------------------------------------------
    def input_shape(self, hp: dict[str, Any]) -> tuple[int, int, int]:
        """(C, H, W) the network sees."""
        raise NotImplementedError

    def build_model(self, hp: dict[str, Any]):
        raise NotImplementedError

    def pretrained_state(self, hp: dict[str, Any]):
        """The network's state dict with ImageNet backbone weights (use_pretrained_model=1)."""
        raise ClientError(f"{self.name} has no pretrained weights; set use_pretrained_model=0")

    def initial_state(self, job, hp: dict[str, Any]):
        """Starting weights: the `model` channel's (incremental training), else the
        pretrained backbone when asked, else None (random init). Checked in the driver,
        before any worker starts."""
        if "model" in job.channels:
            state = self._incremental_state(job.channels["model"], hp)
            try:  # a shape the architecture keys do not name (e.g. an SSD512 extra layer)
                self.build_model(hp).load_state_dict(state)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()
                raise ClientError(f"model channel {job.channels['model'].uri}: its weights do not fit the network "
                                  f"these hyperparameters build ({first[1].strip() if len(first) > 1 else first[0]})"
                                  ) from None
            return state
        if setting(hp, "use_pretrained_model"):
            return self.pretrained_state(hp)
        return None

    def _incremental_state(self, channel, hp):
        import tempfile

        from raysight import artifacts

        uri = data.find_one(channel, ".tar.gz")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                meta = artifacts.extract(uri, tmp)
            except ClientError as exc:
                raise ClientError([f"model channel: {p}" for p in exc.problems]) from None
            if meta.get("algorithm") != self.name:
                raise ClientError(f"model channel: {uri} holds a '{meta.get('algorithm')}' model, not {self.name}")
            old = meta["hyperparameters"]
            mismatched = [f"{k} is {_plain(old.get(k))} in the model but {_plain(hp.get(k))} in this job"
                          for k in self.architecture_keys if _plain(old.get(k)) != _plain(hp.get(k))]
            if mismatched:
                raise ClientError([f"model channel {uri}: {m}" for m in mismatched])
            try:
                return artifacts.load_params(tmp, meta)
            except ClientError as exc:
                raise ClientError([f"model channel {uri}: {p}" for p in exc.problems]) from None

    # -- data ---------------------------------------------------------------------
    def index_rows(self, image_channel, index_channel, hp: dict[str, Any]) -> list[dict[str, Any]]:
        """Supplied with image_index_channels: rows {id, uri, label} of an images channel
        and its index channel, every entry checked (ClientError naming file and entry)."""
        raise NotImplementedError

    def manifest_converter(self, hp: dict[str, Any], channel) -> Callable[[Any, str], list[float]]:
        """An augmented manifest's label attribute → the label an index row would hold."""
        raise ClientError(f"{self.name} does not read augmented manifests")

    def runtime_state(self, hp: dict[str, Any], rows: list[dict] | None, train_parts: list) -> dict[str, Any]:
        """Run-time state derived from the training data, for `criterion` (default: none)."""
        return {}

    def datasets(self, job, hp: dict[str, Any], shards: int = 1) -> TrainingData:
        """Both splits as lazily decoded Ray datasets, index files checked first. A
        ShardedByS3Key train channel gives `shards` datasets, one per worker."""
        out, train = {}, (None, [])
        index_channels = dict(zip(SPLITS, self.image_index_channels))
        for split in SPLITS:
            channel, training = job.channels[split], split == "train"
            if channel.s3_data_type == "AugmentedManifestFile":
                rows = data.manifest_rows(channel, self.manifest_converter(hp, channel))
            elif channel.mime == RECORDIO:
                rows = None  # labels travel inside the records
            else:
                rows = self.index_rows(channel, job.channels[index_channels[split]], hp)
            decode = self.decoder(hp, training=training, cache=data.file_mode_cache(channel))
            decode.seed = channel.shuffle_seed if training else None
            parts = data.channel_datasets(channel, rows, decode, training, shards)
            out[split] = parts if len(parts) > 1 else parts[0]
            if training:
                train = (rows, parts)
        return TrainingData(out, self.runtime_state(hp, *train))

    def prepare_batch(self, batch: dict, hp: dict[str, Any], training: bool) -> dict:
        """Last per-batch step on the device: uint8 NHWC → normalised float NCHW."""
        return {"image": images.normalize(batch["image"]), "label": batch["label"]}

    # -- loss and metrics (supplied) ------------------------------------------------------
    def criterion(self, hp: dict[str, Any], state: dict[str, Any], model):
        """A callable (outputs, batch) → (loss to minimise, {term: detached tensor}); the
        terms go to the train meter, so nothing is computed twice. `model` is the
        unwrapped network (e.g. for its anchors), `state` what runtime_state derived."""
        raise NotImplementedError

    def meter(self, hp: dict[str, Any], split: str, model) -> Meter:
        raise NotImplementedError

    def log_batch(self, epoch: int, batch: int, speed: float, running: dict[str, float]) -> list[str]:
        """Periodic progress lines inside an epoch (MXNet's Speedometer format by default)."""
        values = "\t".join(f"{k}={v:.6f}" for k, v in running.items())
        return [f"Epoch[{epoch}] Batch [{batch}]\tSpeed: {speed:.2f} samples/sec\t{values}"]

    def log_epoch(self, epoch: int, metrics: dict[str, float], seconds: float, hp: dict[str, Any]) -> list[str]:
        """SageMaker-format log lines for one finished epoch."""
        return [f"Epoch[{epoch}] {k}={v:.6f}" for k, v in sorted(metrics.items())] + \
            [f"Epoch[{epoch}] Time cost={seconds:.3f}"]

    def preview(self, model, validation, hp: dict[str, Any]) -> tuple[str, bytes] | None:
        """(file name, PNG) showing the trained model on a few validation samples, or None."""
        return None

    # -- serving (supplied) -----------------------------------------------------------------
    def predictor(self, model, meta: dict[str, Any]) -> PredictorProtocol:
        raise NotImplementedError


def _plain(value):
    """Hyperparameter values compare equal whatever JSON made of tuples."""
    return list(value) if isinstance(value, (list, tuple)) else value
