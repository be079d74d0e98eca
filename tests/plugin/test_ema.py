"""EMA of the weights: the update rule, the saved model is the average, and a resumed run continues it."""

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from transformers import TrainerCallback

from plugin import TrainConfig, load, train
from plugin.ema import EMA_FILE, ema_update
from tests.plugin.test_trainer import FAST


def test_ema_update_matches_hand_values():
    shadow = {"w": torch.tensor([1.0, 2.0])}
    ema_update(shadow, {"w": torch.tensor([3.0, 6.0])}, decay=0.75)
    assert torch.allclose(shadow["w"], torch.tensor([1.5, 3.0]))  # 0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * 6


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_ema_decay_out_of_range_is_rejected(decay):
    with pytest.raises(ValidationError, match="ema_decay"):
        TrainConfig(train_name_or_path="x.jsonl", ema_decay=decay)


class Snapshots(TrainerCallback):
    """The backbone's trainable weights at train begin and after every optimizer step."""

    def __init__(self):
        self.states = []

    def _grab(self, model):
        self.states.append({n: p.detach().clone() for n, p in model.backbone.named_parameters() if p.requires_grad})

    def on_train_begin(self, args, state, control, model=None, **kw):
        self._grab(model)

    def on_step_end(self, args, state, control, model=None, **kw):
        self._grab(model)


def test_saved_model_is_the_moving_average(tiny_bert, data_a, tmp_path):
    snaps = Snapshots()
    result = train(TrainConfig(model_name_or_path=tiny_bert, train_name_or_path=str(data_a),
                               save_dir=str(tmp_path / "e"), ema_decay=0.5, **{**FAST, "max_steps": 3}),
                   callbacks=[snaps])
    assert len(snaps.states) == 4
    expected = {n: t.clone() for n, t in snaps.states[0].items()}
    for step in snaps.states[1:]:
        for n in expected:
            expected[n] = 0.5 * expected[n] + 0.5 * step[n]
    saved = load(result.save_dir).model.backbone.state_dict()
    query = "encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(snaps.states[-1][query], expected[query])  # the average is not the last step
    for name, value in expected.items():
        assert (saved[name] - value).abs().max() < 1e-6, name


def test_resumed_run_continues_the_same_average(tiny_bert, data_a, tmp_path):
    base = dict(model_name_or_path=tiny_bert, train_name_or_path=str(data_a), ema_decay=0.5,
                **{**FAST, "max_steps": 4, "save_strategy": "steps", "save_steps": 2, "save_total_limit": 2})
    whole = train(TrainConfig(**base, save_dir=str(tmp_path / "whole")))
    checkpoint = Path(whole.save_dir) / "checkpoints" / "checkpoint-2"
    assert (checkpoint / EMA_FILE).is_file()
    resumed = train(TrainConfig(**base, save_dir=str(tmp_path / "resumed"), resume_from_checkpoint=str(checkpoint)))
    a = load(whole.save_dir).model.backbone.state_dict()
    b = load(resumed.save_dir).model.backbone.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point()) < 1e-5
    # Without the saved shadow the average restarts at step 2, so the test above can tell the difference.
    (checkpoint / EMA_FILE).unlink()
    restarted = train(TrainConfig(**base, save_dir=str(tmp_path / "restarted"), resume_from_checkpoint=str(checkpoint)))
    c = load(restarted.save_dir).model.backbone.state_dict()
    assert max((a[k] - c[k]).abs().max().item() for k in a if a[k].is_floating_point()) > 1e-4
