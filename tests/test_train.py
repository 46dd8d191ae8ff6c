"""A short real training run: the loss falls, checkpoints are written, and --resume continues exactly."""

from __future__ import annotations

import csv
import shutil

import pytest

torch = pytest.importorskip("torch")

from fastcell.train.trainer import TrainConfig, Trainer  # noqa: E402


def _config(bccd_dir, out, **kw) -> TrainConfig:
    base = dict(data=str(bccd_dir), out=str(out), epochs=3, batch_size=4, max_images=8, lr=2e-3,
                warmup_epochs=0.5, val_every=2, mosaic=0.5, close_mosaic=1, progress=False, seed=3)
    return TrainConfig(**{**base, **kw})


def _fixed_batch_loss(trainer: Trainer) -> float:
    """Loss of the current weights on the un-augmented first images (eval-mode BN, no grad)."""
    from fastcell.data.dataset import collate

    images, targets, *_ = collate([trainer.val_set[i] for i in range(4)])
    model = trainer.model.eval()
    with torch.no_grad():
        loss, _ = trainer.criterion(model(images.float() / 255), targets)
    return float(loss)


@pytest.fixture
def one_thread():
    """One intra-op thread: oneDNN's multi-threaded weight-gradient reductions are not bit-reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_train_writes_checkpoints_lowers_loss_and_resumes_exactly(bccd_dir, tmp_path, one_thread):
    out = tmp_path / "run"
    trainer = Trainer(_config(bccd_dir, out))
    before = _fixed_batch_loss(trainer)
    trainer.fit(stop_after=2)  # as if the run were killed after epoch 2
    snapshot = tmp_path / "epoch2.pt"
    shutil.copy(out / "last.pt", snapshot)
    assert torch.load(snapshot, weights_only=False)["epoch"] == 2
    trainer.fit()  # the uninterrupted run goes on in memory to epoch 3
    assert _fixed_batch_loss(trainer) < before
    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["loss"]) < 0.8 * float(rows[0]["loss"])
    assert rows[1]["val_mAP50"] != "" and rows[2]["val_mAP50"] != ""
    for name in ("last.pt", "best.pt", "results.csv", "results.png", "config.json"):
        assert (out / name).is_file(), name

    # validation during training scores what `fastcell val last.pt` scores: the torch backend, the
    # Annotator, the files read as annotate reads them (fp32 both sides: bf16 is a training-speed option)
    import numpy as np

    from fastcell.evaluation.metrics import evaluate_detections
    from fastcell.evaluation.predict import open_annotator, predict_images

    trainer.bf16 = False
    during = trainer.validate()
    with open_annotator(out / "last.pt", score=trainer.cfg.val_score) as annotator:
        assert annotator.backend.name == "torch"
        predictions = predict_images(annotator, [s.image for s in trainer.val_labels.samples], progress=False)
    after = evaluate_detections(predictions, [(s.boxes, s.class_ids) for s in trainer.val_labels.samples],
                                trainer.classes, score=during.score)
    assert sum(len(p[0]) for p in predictions) > 0
    np.testing.assert_array_equal(after.ap, during.ap)
    np.testing.assert_array_equal(after.confusion, during.confusion)

    # a new process-like start from the epoch-2 checkpoint must reach the very same weights
    resumed = Trainer(_config(bccd_dir, tmp_path / "resumed"), resume=snapshot)
    assert resumed.start_epoch == 2
    resumed.fit()
    assert resumed.step == trainer.step
    for (name, a), b in zip(trainer.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), f"{name}: max diff {(a.float() - b.float()).abs().max():.3g}"
    for a, b in zip(trainer.ema.ema.state_dict().values(), resumed.ema.ema.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_refuses_to_change_the_run_definition(bccd_dir, tmp_path):
    trainer = Trainer(_config(bccd_dir, tmp_path, epochs=1, max_images=4))
    trainer.fit()
    with pytest.raises(ValueError, match="cannot change 'lr'"):
        Trainer(_config(bccd_dir, tmp_path), resume=tmp_path / "last.pt", overrides={"lr": 1.0})
