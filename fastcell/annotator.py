"""The Annotator: frames in, :class:`~fastcell.results.Result` objects out.

    import fastcell
    annotator = fastcell.load()                 # default model, fastest CPU backend (logged: which)
    result = annotator(frame)                   # one frame: uint8/uint16, gray/BGR/BGRA
    results = annotator.batch(frames)           # a list: one letterbox call, batched inference,
                                                # one post-processing call

Three stages, each usable on its own (the streaming pipeline runs them in separate threads):
:meth:`Annotator.preprocess` → :meth:`Annotator.infer` → :meth:`Annotator.postprocess`.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fastcell.postprocess import Postprocessor, apply_overrides
from fastcell.frames import check_frame
from fastcell.preprocess import Preprocessor
from fastcell.results import Result
from fastcell.runtime import Backend, open_backend
from fastcell.scale import needs_rescale
from fastcell.spec import ModelSpec, check_cell_size, find_model

__all__ = ["Annotator", "load"]

log = logging.getLogger("fastcell")

_MODEL = object()  # "not given": keep the model's (or this Annotator's) setting


class Annotator:
    """Detect and segment cells in frames with one model on one backend.

    Parameters
    ----------
    backend : Backend
        The inference engine (see :func:`fastcell.runtime.open_backend`).
    spec : ModelSpec, optional
        The model description; default ``backend.spec``.
    segment : bool
        Compute instance labels and segmented images (off: boxes only).
    keep_image : bool
        Keep the original frame in each Result.
    max_batch : int
        Largest batch sent to the backend at once; bigger lists are split.
    cell_size : float, "auto" or None, optional
        Typical cell diameter in the frames' pixels; frames whose cells would come out larger than
        the model's training scale are scaled down to it (:mod:`fastcell.scale`). ``"auto"``
        re-runs only the frames whose cells came out too large (or none at all); ``None``: the
        plain letterbox. Default: the model's ``cell_size`` setting.
    **overrides
        Post-processing settings replacing the model's, by the names of their
        :class:`~fastcell.spec.Thresholds` and :class:`~fastcell.spec.Segmentation` fields
        (:data:`fastcell.postprocess.OVERRIDABLE`): ``score``, ``nms_iou``, ``gbciou``,
        ``merge_iou``, ``merge`` ("multi"/"single"/"none"), ``class_agnostic``,
        ``max_detections``, ``disc``, ``hsv_low``, ``hsv_high``, ``fill``.

    Notes
    -----
    One Annotator is not meant to be called from several threads at once: its input buffer is
    reused by every call. For another thread, take :meth:`with_options` — a sibling on the same
    backend (backends serialise or isolate their own calls) with buffers of its own.
    :func:`fastcell.stream` does so itself, so a stream and direct calls may share an Annotator.
    """

    def __init__(self, backend: Backend, spec: ModelSpec | None = None, *, segment: bool = True,
                 keep_image: bool = True, max_batch: int = 8, cell_size: Any = _MODEL, **overrides: Any) -> None:
        self.backend = backend
        spec = apply_overrides(backend.spec if spec is None else spec, overrides)
        if cell_size is not _MODEL:
            spec = spec.replace(cell_size=check_cell_size(cell_size))
        self._configure(spec, segment, keep_image, max_batch)

    def _configure(self, spec: ModelSpec, segment: bool, keep_image: bool, max_batch: int) -> None:
        """Settings and the buffers that go with them (each Annotator owns its own)."""
        self.spec = spec
        self.segment = bool(segment)
        self.keep_image = bool(keep_image)
        self.max_batch = max(1, int(max_batch))
        self._pre = Preprocessor(spec.input_size, spec.pad_value, self.max_batch)
        self._post = Postprocessor(spec, segment=self.segment, keep_image=self.keep_image)

    def with_options(self, *, segment: bool | None = None, keep_image: bool | None = None,
                     max_batch: int | None = None, cell_size: Any = _MODEL, **overrides: Any) -> "Annotator":
        """A sibling Annotator on the same backend, with its own buffers and optionally other settings.

        Parameters
        ----------
        segment, keep_image, max_batch : optional
            As in the constructor; ``None`` keeps this Annotator's.
        **overrides
            Post-processing settings replacing this Annotator's (its own overrides are kept).

        Returns
        -------
        Annotator
            Safe to use from another thread while this one runs: only the backend is shared.
            A shallow copy, so a subclass (or a patched method) stays what it was. Closing either
            closes the shared backend.
        """
        twin = copy.copy(self)
        spec = apply_overrides(self.spec, overrides) if overrides else self.spec
        if cell_size is not _MODEL:
            spec = spec.replace(cell_size=check_cell_size(cell_size))
        twin._configure(spec,
                        self.segment if segment is None else segment,
                        self.keep_image if keep_image is None else keep_image,
                        self.max_batch if max_batch is None else max_batch)
        return twin

    @classmethod
    def from_model(cls, model: str | Path = "default", device: str = "auto", precision: str | None = None,
                   *, throughput: bool = False, num_threads: int | None = None, segment: bool = True,
                   keep_image: bool = True, max_batch: int = 8, verbose: bool = False, cell_size: Any = _MODEL,
                   **overrides: Any) -> "Annotator":
        """Open a shipped model by name (``"default"``, ``"bccd"``) or a path to its ``model.json``.

        Parameters
        ----------
        model : str or path
            Model name or path (see :func:`fastcell.spec.find_model`).
        device : {"auto", "cpu", "openvino", "onnxruntime", "torch"}
            The backend; ``"auto"`` picks the fastest present (OpenVINO, else ONNX Runtime).
        precision : {None, "fp32", "bf16", "int8"}
            Backend arithmetic; ``None`` is the backend's default.
        throughput : bool
            OpenVINO only: two asynchronous requests per batch.
        verbose : bool
            Also print which backend was chosen (it is always logged at INFO level on the
            ``"fastcell"`` logger).
        """
        spec = ModelSpec.load(find_model(model))
        options: dict[str, Any] = {}
        if throughput:
            options["throughput"] = True
        if num_threads:
            options["num_threads"] = num_threads
        backend = open_backend(spec, device, precision, **options)
        if verbose:
            print(f"fastcell: model {spec.name!r} on {backend.name} ({backend.precision})")
        return cls(backend, spec, segment=segment, keep_image=keep_image, max_batch=max_batch, cell_size=cell_size,
                   **overrides)

    # -- stages ------------------------------------------------------------------------------------
    def preprocess(self, frames: Sequence[np.ndarray],
                   cell_sizes: Sequence[float | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Letterbox frames into the reused input buffer: ``(batch, params)``.

        ``cell_sizes`` (one per frame) default to the ``cell_size`` setting when it is a number.
        """
        if cell_sizes is None and isinstance(self.spec.cell_size, float):
            cell_sizes = [self.spec.cell_size] * len(frames)
        return self._pre(frames, cell_sizes, self.spec.train_cell_size)

    def postprocess_rescaled(self, heads: Sequence[np.ndarray], params: np.ndarray, frames: Sequence[np.ndarray],
                             meta: Sequence[dict[str, Any]] | None = None) -> list[Result]:
        """:meth:`postprocess`, then :meth:`rescale_pass` (the stream's post-processing stage)."""
        return self.rescale_pass(self.postprocess(heads, params, frames, meta), frames)

    def rescale_pass(self, results: list[Result], frames: Sequence[np.ndarray]) -> list[Result]:
        """``cell_size="auto"``: run again, at their own cells' scale, the frames whose cells came
        out far larger than the training scale or not at all (see :mod:`fastcell.scale`).

        Results of the other frames are returned as they are; a no-op for other settings.
        """
        if self.spec.cell_size != "auto" or not results:
            return results
        redo = {}
        for i, r in enumerate(results):
            height, width = r.shape
            cell = needs_rescale(r.boxes, r.scores, (r.input_scale, 0, 0, width, height),
                                 self.spec.train_cell_size, self.spec.input_size)
            if cell is not None:
                redo[i] = cell
        if not redo:
            return results
        order = sorted(redo)
        chunk = [frames[i] for i in order]
        # a buffer of its own: the stream calls this from its post-processing threads while its
        # inference thread fills the Annotator's buffer
        pre = Preprocessor(self.spec.input_size, self.spec.pad_value, len(chunk))
        batch, params = pre(chunk, [redo[i] for i in order], self.spec.train_cell_size)
        heads = self.infer(batch)
        meta = [{"frame_index": results[i].frame_index, "timestamp": results[i].timestamp,
                 "source": results[i].source} for i in order]
        again = self.postprocess(heads, params, chunk, meta)
        results = list(results)
        for i, r in zip(order, again):
            r.cell_size = redo[i]
            results[i] = r
        return results

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the backend on a preprocessed batch (split into ``max_batch`` chunks)."""
        if batch.shape[0] <= self.max_batch:
            return self.backend.infer(batch)
        parts = [self.backend.infer(batch[i:i + self.max_batch]) for i in range(0, batch.shape[0], self.max_batch)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    def preprocess_infer(self, frames: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """:meth:`preprocess` then :meth:`infer` — on the GPU in one go where the backend can.

        A backend with ``infer_frames`` (the cuda backend) uploads the frames once and letterboxes
        them on the device into its input (the same batch as the CPU's, bit for bit); frames it
        cannot take there (mixed sizes, uint16) take the CPU letterbox.

        Returns
        -------
        heads : list of ndarray of float32
            As :meth:`infer`.
        params : (N, 5) ndarray of float32
            The letterbox parameters (the caller's to keep).
        """
        on_device = getattr(self.backend, "infer_frames", None)
        if on_device is not None:
            done = on_device(frames, self.spec.pad_value)
            if done is not None:
                return done
        batch, params = self.preprocess(frames)
        return self.infer(batch), params

    def submit(self, frames: Sequence[np.ndarray]) -> Any:
        """Start :meth:`preprocess_infer` on a backend that pipelines (``submit_frames``: the cuda
        backend), returning at once: a ticket for :meth:`collect`, or ``None`` — the backend cannot
        take these frames this way or has two batches in flight; call :meth:`preprocess_infer`."""
        submit = getattr(self.backend, "submit_frames", None)
        return None if submit is None else submit(frames, self.spec.pad_value)

    def collect(self, ticket: Any) -> tuple[list[np.ndarray], np.ndarray]:
        """Wait for a batch from :meth:`submit`: ``(heads, params)`` as :meth:`preprocess_infer`."""
        return self.backend.collect(ticket)

    def postprocess(self, heads: Sequence[np.ndarray], params: np.ndarray, frames: Sequence[np.ndarray],
                    meta: Sequence[dict[str, Any]] | None = None) -> list[Result]:
        """Decode, merge and segment: one Result per frame."""
        return self._post(heads, params, frames, meta)

    # -- calls ---------------------------------------------------------------------------------------
    def __call__(self, frame: np.ndarray) -> Result:
        """Annotate one frame (see :func:`fastcell.frames.check_frame` for what is accepted)."""
        return self.batch([frame])[0]

    def batch(self, frames: Sequence[np.ndarray]) -> list[Result]:
        """Annotate a list of frames; Results come back in the same order.

        Raises
        ------
        TypeError
            When ``frames`` is one array rather than a list, or a frame is not a uint8/uint16 array
            (the message names its index).
        ValueError
            When a frame has a shape that is not an image's (the message names its index).
        """
        if isinstance(frames, np.ndarray):
            raise TypeError("batch() takes a list of frames; call the annotator on a single frame")
        frames = list(frames)
        if not frames:
            return []
        start = time.monotonic()
        checked = []
        for i, frame in enumerate(frames):
            try:
                checked.append(check_frame(frame))
            except (TypeError, ValueError) as err:
                raise type(err)(f"frame {i}: {err}") from None
        results: list[Result] = []
        for lo in range(0, len(checked), self.max_batch):
            chunk = checked[lo:lo + self.max_batch]
            heads, params = self.preprocess_infer(chunk)
            meta = [{"frame_index": lo + i, "timestamp": start} for i in range(len(chunk))]
            results.extend(self.rescale_pass(self.postprocess(heads, params, chunk, meta), chunk))
        done = time.monotonic()
        for r in results:
            r.latency = done - start
        return results

    def release_buffers(self) -> None:
        """Free this Annotator's own buffers (the preprocessing batch), leaving the backend open.

        What a sibling from :meth:`with_options` that is no longer needed should do: closing it
        would close the backend it shares. A later call allocates the buffer again.
        """
        self._pre.release()

    def close(self) -> None:
        """Close the backend — shared with every sibling from :meth:`with_options`."""
        self.backend.close()

    def __enter__(self) -> "Annotator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Annotator(model={self.spec.name!r}, backend={self.backend!r})"


def load(model: str | Path = "default", device: str = "auto", precision: str | None = None,
         **kwargs: Any) -> Annotator:
    """Open a model on the fastest available backend; which was chosen is logged.

    Same arguments as :meth:`Annotator.from_model`. The choice goes to the ``"fastcell"`` logger at
    INFO level (``logging.basicConfig(level=logging.INFO)`` shows it; ``verbose=True`` prints it).
    """
    return Annotator.from_model(model, device, precision, **kwargs)
