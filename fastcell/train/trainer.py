"""The training loop: AdamW/SGD, cosine LR with warm-up, EMA, gradient clipping, bf16 autocast.

Every epoch writes ``last.pt`` (and ``best.pt`` when the validation mAP@0.5 improves), so a run
that is killed loses at most one epoch. ``resume`` restores model, EMA, optimizer, step counter
(the LR schedule is a pure function of it), the RNG states and the epoch; the data order and the
augmentations are drawn from ``(seed, epoch)``, so a resumed run continues exactly.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from fastcell.data.augment import Augment
from fastcell.data.dataset import DetectionDataset, collate
from fastcell.data.labels import LabelSet, load_labels
from fastcell.data.sources import detect_source, load_source, merge_sources
from fastcell.defaults import INPUT_SIZE
from fastcell.evaluation.metrics import evaluate_detections
from fastcell.evaluation.predict import predict_images
from fastcell.model.anchors import kmeans_anchors, mean_best_iou, scaled_box_sizes
from fastcell.model.attentionnet import AttentionNet
from fastcell.model.loss import YoloLoss
from fastcell.spec import ModelSpec

__all__ = ["TrainConfig", "Trainer", "ModelEMA", "bf16_supported", "slim_checkpoint", "join_parts"]


@dataclass
class TrainConfig:
    """Everything that defines a run (saved in every checkpoint and in ``config.json``)."""

    data: str | list  # one data set, or several sources (see fastcell.data.sources)
    out: str = "runs/train"
    train_split: str = "train"
    val_split: str = "val"
    input_size: int = INPUT_SIZE
    epochs: int = 100
    batch_size: int = 16
    optimizer: str = "adamw"  # or "sgd"
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.937
    warmup_epochs: float = 3.0
    final_lr_ratio: float = 0.05
    ema_decay: float = 0.999
    ema_tau: float = 200.0  # EMA decay ramps up as 1 - exp(-updates / tau)
    clip_norm: float = 10.0
    bf16: bool = True
    channels_last: bool = True
    seed: int = 0
    workers: int = 0
    threads: int = 0  # 0: leave torch's default
    mosaic: float = 0.5
    close_mosaic: int = 10  # last epochs without mosaic (train on the deployed look)
    scale: float = 0.3
    translate: float = 0.1
    hsv_h: float = 0.015
    hsv_s: float = 0.5
    hsv_v: float = 0.3
    # other labs: stain, camera, scale and single-cell frames (0 turns each off)
    zoom_min: float = 0.0  # >0: log-uniform zoom in [zoom_min, zoom_max] replaces ``scale``
    zoom_max: float = 0.0
    stain: float = 0.0
    white_balance: float = 0.0
    gamma: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    jpeg: float = 0.0
    single_cell: float = 0.0
    mask_unlabelled: bool = True  # do not teach a source's unlabelled classes as background
    exclude_sources: str = ""  # comma-separated source names to leave out (leave-one-source-out)
    source_weights: str = ""  # "bccd=2,pig-wbc=0.5": sampling weight of each source's images
    epoch_size: int = 0  # >0: images drawn per epoch (weighted, with replacement)
    device: str = "auto"  # "cpu", "cuda" or "auto"
    init: str = ""  # a shipped model.onnx or a checkpoint to start from (fine-tuning), else from scratch
    time_budget: float = 0.0  # >0: seconds; after two epochs the epoch count shrinks to fit it
    ignore_iou: float = 0.7
    assign_iou: float = 0.3
    val_every: int = 2
    val_score: float = 0.001  # low threshold for mAP (the curve needs the low-score tail)
    anchors: list = field(default_factory=list)  # empty: K-means++ on the training boxes
    max_images: int = 0  # >0: use only the first N training/val images (tests, smoke runs)
    progress: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def augment(self, mosaic: bool = True) -> Augment:
        zoom = (self.zoom_min, self.zoom_max) if self.zoom_min > 0 else None
        return Augment(mosaic=self.mosaic if mosaic else 0.0, scale=self.scale, translate=self.translate,
                       hsv_h=self.hsv_h, hsv_s=self.hsv_s, hsv_v=self.hsv_v, zoom=zoom, stain=self.stain,
                       white_balance=self.white_balance, gamma=self.gamma, blur=self.blur, noise=self.noise,
                       jpeg=self.jpeg, single_cell=self.single_cell)

    @property
    def paths(self) -> list[str]:
        return list(self.data) if isinstance(self.data, (list, tuple)) else [self.data]


def bf16_supported() -> bool:
    """bf16 autocast pays off on CPUs with AVX512-BF16 or AMX (oneDNN's bf16 kernels)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


class ModelEMA:
    """Exponential moving average of the weights (and BN buffers), with a warm-up ramp."""

    def __init__(self, model: torch.nn.Module, decay: float, tau: float, updates: int = 0) -> None:
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])


def _subset(labels: LabelSet, n: int) -> LabelSet:
    if n <= 0:
        return labels
    return LabelSet(labels.classes, labels.samples[:n], labels.issues, labels.root, labels.split)


def _load(paths: list[str], split: str, n: int, exclude: str = "") -> list[LabelSet]:
    """One LabelSet per source. A single data set of unknown layout keeps its own classes; known
    sources, packed sets and any list of several are mapped onto the shared classes
    (fastcell.data.sources). ``exclude``: comma-separated source names left out."""
    if len(paths) == 1 and detect_source(paths[0]) is None:
        return [_subset(load_labels(paths[0], split), n)]
    left_out = {name.strip() for name in exclude.split(",") if name.strip()}
    sets = []
    for path in paths:
        labels = load_source(path, split)
        by_source: dict[str, list] = {}
        for sample in labels.samples:
            if sample.source not in left_out:
                by_source.setdefault(sample.source, []).append(sample)
        sets += [_subset(LabelSet(labels.classes, samples, labels.issues, labels.root, split), n)
                 for samples in by_source.values()]
    if not sets:
        raise ValueError(f"no {split} images left in {paths} after excluding {sorted(left_out)}")
    return sets


def _init_anchors(path: str) -> list:
    if str(path).endswith(".onnx"):
        return json.loads((Path(path).parent / "model.json").read_text())["anchors"]
    return torch.load(path, map_location="cpu", weights_only=False)["anchors"]


def _only(prediction, keep: list[int]):
    """A ``(boxes, scores, class_ids)`` prediction restricted to the classes in ``keep``."""
    boxes, scores, ids = (np.asarray(v) for v in prediction[:3])
    mask = np.isin(ids, keep)
    return boxes[mask], scores[mask], ids[mask]


def _source_name(labels: LabelSet) -> str:
    return labels.samples[0].source if labels.samples and labels.samples[0].source else str(labels.root)


class Trainer:
    """Trains AttentionNet on a data set; see :class:`TrainConfig` for the knobs."""

    #: settings a resumed run may change (the rest of its definition is taken from the checkpoint)
    RESUME_OVERRIDES = ("epochs", "progress", "workers", "threads", "val_every")

    def __init__(self, config: TrainConfig, resume: str | Path | None = None,
                 overrides: dict | None = None) -> None:
        """``resume``: a checkpoint to continue; ``overrides``: values of :attr:`RESUME_OVERRIDES`
        to change on resume (e.g. a new ``epochs`` budget — the cosine schedule then stretches or
        shrinks to it from the current step)."""
        self.resume_state = None
        if resume is not None:
            self.resume_state = torch.load(resume, map_location="cpu", weights_only=False)
            saved = TrainConfig.from_dict(self.resume_state["config"])
            for key, value in (overrides or {}).items():
                if key not in self.RESUME_OVERRIDES:
                    allowed = ", ".join(self.RESUME_OVERRIDES)
                    raise ValueError(f"cannot change {key!r} when resuming (allowed: {allowed})")
                setattr(saved, key, value)
            if saved.epochs <= self.resume_state["epoch"] and saved.epochs != self.resume_state["config"]["epochs"]:
                done = self.resume_state["epoch"]
                raise ValueError(f"epochs={saved.epochs} but the checkpoint has already done {done}")
            config = saved
        self.cfg = config
        if config.threads:
            torch.set_num_threads(config.threads)
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._seed_everything(config.seed)
        train_sets = _load(config.paths, config.train_split, config.max_images, config.exclude_sources)
        self.val_sources = _load(config.paths, config.val_split, config.max_images, config.exclude_sources)
        self.train_labels = merge_sources(train_sets) if len(train_sets) > 1 else train_sets[0]
        self.val_labels = merge_sources(self.val_sources) if len(self.val_sources) > 1 else self.val_sources[0]
        issues = self.train_labels.issues + self.val_labels.issues
        for issue in issues[:20]:
            print(f"skipped label: {issue}")
        if len(issues) > 20:
            print(f"... and {len(issues) - 20} more skipped labels")
        self.classes = self.train_labels.classes
        self.device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available()
                                   else ("cpu" if config.device == "auto" else config.device))
        wh = scaled_box_sizes(self.train_labels, config.input_size)
        if config.init and not config.anchors:
            # fine-tuning keeps the anchors the heads were trained for
            config.anchors = np.asarray(_init_anchors(config.init), np.float32).reshape(-1).tolist()
        if not config.anchors and (config.zoom_min > 0 or config.single_cell > 0):
            wh = self._augmented_box_sizes(config)
        if config.anchors:
            self.anchors = np.asarray(config.anchors, np.float32).reshape(6, 2)
        else:
            self.anchors = kmeans_anchors(wh, 6, "iou", seed=config.seed)
            config.anchors = self.anchors.tolist()  # exact float32 values: a resumed run must match
        self.anchor_iou = mean_best_iou(wh, self.anchors)
        self.bf16 = config.bf16 and (self.device.type == "cuda" or bf16_supported())
        self.model = AttentionNet(len(self.classes), config.input_size).to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.criterion = YoloLoss(self.anchors, len(self.classes), ignore_iou=config.ignore_iou,
                                  assign_iou=config.assign_iou).to(self.device)
        self.optimizer = self._make_optimizer()
        self.ema = ModelEMA(self.model, config.ema_decay, config.ema_tau)
        self.train_set = DetectionDataset(self.train_labels, config.input_size, config.augment(), config.seed,
                                          progress=config.progress)
        self.val_sets = [DetectionDataset(v, config.input_size, None, progress=config.progress)
                         for v in self.val_sources if len(v)]
        self.val_set = self.val_sets[0]
        if config.init and self.resume_state is None:
            self._load_init(config.init)
        self.sample_weights = self._sample_weights()
        self.epoch_size = config.epoch_size or len(self.train_set)
        self.steps_per_epoch = max(1, self.epoch_size // config.batch_size)
        self.start_epoch, self.step, self.best_map, self.history = 0, 0, -1.0, []
        if self.resume_state is not None:
            self._load_state(self.resume_state)
        (self.out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")

    # -- setup -------------------------------------------------------------------------------------
    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _load_init(self, path: str) -> None:
        """Start from a trained model: its weights, BatchNorms re-parametrised on training images."""
        from fastcell.model.onnx_weights import calibrate_batchnorm, load_onnx_weights

        if str(path).endswith(".onnx"):
            classes = json.loads((Path(path).parent / "model.json").read_text())["classes"]
            if tuple(classes) != tuple(self.classes):
                raise ValueError(f"{path} knows classes {classes}, this run trains {list(self.classes)}")
            model = AttentionNet(len(self.classes), self.cfg.input_size)
            load_onnx_weights(model, path)
            rng = np.random.default_rng(self.cfg.seed)
            batches = []
            for _ in range(8):
                items = [self.train_set[int(i)][0] for i in rng.integers(0, len(self.train_set), 8)]
                batches.append(torch.stack(items).float().div_(255))
            calibrate_batchnorm(model, batches)
            state = model.state_dict()
        else:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            if tuple(ckpt["classes"]) != tuple(self.classes):
                raise ValueError(f"{path} knows classes {ckpt['classes']}, this run trains {list(self.classes)}")
            state = ckpt["ema"]
        self.model.load_state_dict({k: v.float() if v.dtype.is_floating_point else v for k, v in state.items()})
        self.ema = ModelEMA(self.model, self.cfg.ema_decay, self.cfg.ema_tau)
        print(f"initialised from {path}", flush=True)

    def _augmented_box_sizes(self, config: TrainConfig, draws: int = 1500) -> np.ndarray:
        """Box sizes as the network sees them in training (zoomed, cropped): the anchors' data when
        the augmentations move sizes far from the letterbox scale (K-means++ runs on these)."""
        probe = DetectionDataset(self.train_labels, config.input_size, config.augment(), config.seed + 1,
                                 progress=False)
        rng = np.random.default_rng(config.seed)
        sizes = []
        for index in rng.integers(0, len(probe), min(draws, 4 * len(probe))):
            targets = probe[int(index)][1].numpy()
            sizes.append(targets[:, 3:5] - targets[:, 1:3])
        wh = np.concatenate(sizes) if sizes else np.zeros((0, 2), np.float32)
        return wh[(wh > 1).all(1)].astype(np.float32)

    def _sample_weights(self) -> np.ndarray | None:
        """Per-image sampling weights from ``source_weights`` (each source's images share its weight)."""
        if not self.cfg.source_weights:
            return None
        weights = {}
        for item in self.cfg.source_weights.split(","):
            name, _, value = item.partition("=")
            weights[name.strip()] = float(value)
        known = {s.source for s in self.train_labels.samples}
        unknown = set(weights) - known
        if unknown:
            raise ValueError(f"source_weights names {sorted(unknown)}, the sources are {sorted(known)}")
        per_source = {name: sum(s.source == name for s in self.train_labels.samples) for name in known}
        # a weight is the source's share of an epoch, whatever its size
        return np.array([weights.get(s.source, 1.0) / per_source[s.source] for s in self.train_labels.samples])

    def _make_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            # weight decay on conv weights only; BN scales/shifts and biases are left alone
            (decay if p.ndim == 4 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if self.cfg.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(self.cfg.momentum, 0.999))
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.cfg.lr, momentum=self.cfg.momentum, nesterov=True)
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.cfg.optimizer!r}")

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine from ``lr`` to ``lr · final_lr_ratio`` at the last step."""
        total = self.cfg.epochs * self.steps_per_epoch
        warm = int(self.cfg.warmup_epochs * self.steps_per_epoch)
        if step < warm:
            return self.cfg.lr * (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        floor = self.cfg.final_lr_ratio
        return self.cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))

    # -- checkpoints -------------------------------------------------------------------------------
    def _state(self, epoch: int) -> dict:
        return {
            "epoch": epoch,  # the number of finished epochs
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.ema.state_dict(),
            "ema_updates": self.ema.updates,
            "optimizer": self.optimizer.state_dict(),
            "best_map": self.best_map,
            "history": self.history,
            "config": asdict(self.cfg),
            "classes": list(self.classes),
            "anchors": self.anchors.tolist(),
            "input_size": self.cfg.input_size,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }

    def _load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.ema.load_state_dict(state["ema"])
        self.ema.updates = state["ema_updates"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch, self.step = state["epoch"], state["step"]
        self.best_map, self.history = state["best_map"], list(state["history"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])

    def _save(self, epoch: int, is_best: bool) -> None:
        state = self._state(epoch)
        tmp = self.out / "last.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out / "last.pt")  # atomic: a kill mid-write never leaves a broken last.pt
        if is_best:
            torch.save(state, self.out / "best.tmp")
            (self.out / "best.tmp").replace(self.out / "best.pt")

    # -- loop --------------------------------------------------------------------------------------
    def train_one_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        self.train_set.augment = cfg.augment(mosaic=epoch < cfg.epochs - cfg.close_mosaic)
        self.train_set.set_epoch(epoch)
        generator = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        sampler = None
        if self.sample_weights is not None or cfg.epoch_size:
            weights = self.sample_weights if self.sample_weights is not None else np.ones(len(self.train_set))
            sampler = torch.utils.data.WeightedRandomSampler(weights.tolist(), self.epoch_size, replacement=True,
                                                             generator=generator)
        loader = DataLoader(self.train_set, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                            drop_last=True, num_workers=cfg.workers, collate_fn=collate, generator=generator,
                            persistent_workers=False, pin_memory=self.device.type == "cuda")
        self.model.train()
        sums = torch.zeros(4, device=self.device)
        count = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, leave=False)
        for images, targets, _, _, labelled in bar:
            lr = self.lr_at(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            x = images.to(self.device, non_blocking=True).float().div_(255)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                outputs = self.model(x)
            loss, parts = self.criterion(outputs, targets, labelled if cfg.mask_unlabelled else None)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_norm)
            self.optimizer.step()
            self.ema.update(self.model)
            self.step += 1
            sums += parts
            count += 1
            if count % 20 == 0:  # a device sync: not every step
                bar.set_postfix(loss=f"{float(sums[3]) / count:.4f}", lr=f"{lr:.2e}")
        mean = (sums / max(count, 1)).tolist()
        return {"box": mean[0], "obj": mean[1], "cls": mean[2], "loss": mean[3],
                "lr": self.lr_at(max(self.step - 1, 0))}

    def validate(self, model: torch.nn.Module | None = None, split_set: DetectionDataset | None = None):
        model = model or self.ema.ema
        dataset = split_set or self.val_set
        # through the torch backend and an Annotator: validation scores what `fastcell annotate` would give
        from fastcell.annotator import Annotator
        from fastcell.runtime.torch_backend import TorchBackend

        spec = ModelSpec(classes=tuple(self.classes), anchors=self.anchors, input_size=self.cfg.input_size)
        backend = TorchBackend(spec, model=model, precision="bf16" if self.bf16 else "fp32",
                               channels_last=self.cfg.channels_last)
        annotator = Annotator(backend, segment=False, keep_image=False, max_batch=self.cfg.batch_size,
                              score=self.cfg.val_score)
        preds = predict_images(annotator, [s.image for s in dataset.labels.samples], progress=self.cfg.progress)
        gts = [(s.boxes, s.class_ids) for s in dataset.labels.samples]
        labelled = dataset.labels.samples[0].labelled if dataset.labels.samples else None
        if labelled is not None and not all(labelled):
            # a class the source does not label can be neither found nor missed there
            keep = [i for i, known in enumerate(labelled) if known]
            preds = [_only(p, keep) for p in preds]
        return evaluate_detections(preds, gts, self.classes, score=spec.thresholds.score)

    def validate_sources(self, model: torch.nn.Module | None = None) -> dict:
        """mAP@0.5 over each source's labelled classes, and their mean (what picks ``best.pt``)."""
        row = {}
        for dataset in self.val_sets:
            metrics = self.validate(model, dataset)
            labelled = dataset.labels.samples[0].labelled or (True,) * len(self.classes)
            aps = [float(a) for a, known in zip(metrics.ap50, labelled) if known]
            name = _source_name(dataset.labels)
            row[f"val_mAP50_{name}"] = float(np.nanmean(aps)) if not np.all(np.isnan(aps)) else 0.0
            if dataset is self.val_sets[0]:
                row.update({"val_mAP50_95": metrics.map50_95,
                            **{f"val_AP50_{c}": float(a) for c, a in zip(self.classes, metrics.ap50)}})
        row["val_mAP50"] = float(np.mean([v for k, v in row.items() if k.startswith("val_mAP50_")
                                          and k != "val_mAP50_95"]))
        return row

    def fit(self, stop_after: int | None = None) -> dict:
        """Train to ``cfg.epochs`` (or stop after ``stop_after`` more epochs, as an interruption would)."""
        cfg = self.cfg
        end = cfg.epochs if stop_after is None else min(cfg.epochs, self.start_epoch + stop_after)
        print(f"classes {list(self.classes)}; anchors {self.anchors.round(1).tolist()} "
              f"(mean best IoU {self.anchor_iou:.3f}); {len(self.train_set)} train / {len(self.val_set)} val images; "
              f"bf16 {'on' if self.bf16 else 'off'}; validation: the Annotator on the torch backend",
              flush=True)
        epoch = self.start_epoch
        while epoch < end:
            t0 = time.time()
            row = {"epoch": epoch + 1, **self.train_one_epoch(epoch)}
            last = epoch + 1 == cfg.epochs
            is_best = False
            if (epoch + 1) % cfg.val_every == 0 or last:
                if len(self.val_sets) == 1:
                    metrics = self.validate()
                    row.update({"val_mAP50": metrics.map50, "val_mAP50_95": metrics.map50_95,
                                **{f"val_AP50_{c}": float(a) for c, a in zip(self.classes, metrics.ap50)}})
                else:
                    row.update(self.validate_sources())
                if row["val_mAP50"] > self.best_map:
                    self.best_map, is_best = row["val_mAP50"], True
            row["seconds"] = time.time() - t0
            self.history.append(row)
            self._save(epoch + 1, is_best)
            self.start_epoch = epoch + 1  # a later fit() call continues from here
            self._write_log()
            msg = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
            print(msg + (" *best*" if is_best else ""), flush=True)
            self._fit_budget(epoch + 1)
            end = cfg.epochs if stop_after is None else min(cfg.epochs, end)
            epoch += 1
        return {"best_mAP50": self.best_map, "out": str(self.out)}

    def _fit_budget(self, done: int) -> None:
        """With a time budget, fit the epoch count to it after every epoch from the second on, at
        the pace of the last two epochs: the cosine schedule then anneals to its floor in time
        instead of being cut off, and follows a machine whose speed changes (a shared one)."""
        cfg = self.cfg
        if cfg.time_budget <= 0 or done < 2 or len(self.history) < 2:
            return
        per_epoch = float(np.mean([row["seconds"] for row in self.history[-2:]]))
        left = cfg.time_budget - sum(row["seconds"] for row in self.history)
        # spent: stop here; else at least one more epoch (the schedule's last one)
        fits = done if left <= 0 else max(done + 1, done + int(left / max(per_epoch, 1e-6)))
        if fits != cfg.epochs:
            print(f"time budget: {max(left, 0):.0f} s left at {per_epoch:.1f} s/epoch: {fits} epochs in all "
                  f"(was {cfg.epochs})", flush=True)
            cfg.epochs = fits

    def _write_log(self) -> None:
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        with open(self.out / "results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
        try:
            from fastcell.train.plots import plot_history

            plot_history(self.history, self.out / "results.png")
        except Exception as exc:  # plots are a convenience; never lose a run over them
            print(f"could not draw plots: {exc}")


def slim_checkpoint(checkpoint: str | Path, out: str | Path, chunk_mb: float = 0.0) -> list[Path]:
    """The EMA weights of a checkpoint in float16 with what export needs (classes, anchors, input
    size, config, history) — a tenth of the full checkpoint, no optimizer state, not resumable.

    ``chunk_mb > 0`` splits the file into parts of at most that size (``out.part0``, ...), for
    transfers with a per-file limit; :func:`join_parts` puts them back together.
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    slim = {k: state[k] for k in ("epoch", "best_map", "history", "config", "classes", "anchors", "input_size")
            if k in state}
    slim["ema"] = {k: (v.half() if v.dtype.is_floating_point else v) for k, v in state["ema"].items()}
    out = Path(out)
    torch.save(slim, out)
    if chunk_mb <= 0:
        return [out]
    data, size, parts = out.read_bytes(), int(chunk_mb * 2**20), []
    for k in range(0, len(data), size):
        part = out.with_name(f"{out.name}.part{k // size}")
        part.write_bytes(data[k:k + size])
        parts.append(part)
    out.unlink()
    return parts


def join_parts(first_part: str | Path, out: str | Path) -> Path:
    """Join ``NAME.part0``, ``NAME.part1``, ... (from :func:`slim_checkpoint`) into ``out``."""
    first_part = Path(first_part)
    stem = first_part.name.rsplit(".part", 1)[0]
    parts = sorted(first_part.parent.glob(f"{stem}.part*"), key=lambda p: int(p.name.rsplit(".part", 1)[1]))
    Path(out).write_bytes(b"".join(p.read_bytes() for p in parts))
    return Path(out)
