"""End to end: train tiny random BERTs on formats A/B/C, real MiniLM a few steps,
export that sentence-transformers loads identically, resume, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import TrainerCallback

from plugin import TrainConfig, load, train
from plugin.data import DataError
from tests.conftest import REPO, SHARED_DATA, minilm_path

FAST = {"epochs": 1, "batch_size": 8, "evaluate_before_training": False, "eval_strategy": "no",
        "save_strategy": "no", "logging_steps": 1, "warmup_steps": 0, "learning_rate": 1e-3}


class StepRecorder(TrainerCallback):
    def __init__(self):
        self.steps, self.logs = [], []

    def on_step_end(self, args, state, control, **kw):
        self.steps.append(state.global_step)

    def on_log(self, args, state, control, logs=None, **kw):
        self.logs.append(dict(logs or {}))


def st_matches_ours(save_dir: str, texts: list[str]) -> float:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(save_dir, device="cpu").encode(texts, batch_size=4, convert_to_numpy=True)
    ours = load(save_dir).encode(texts, batch_size=3)
    return float(np.abs(st - ours).max())


@pytest.mark.parametrize("fixture, fmt, extra", [
    ("data_a", "A", {"cosine_w": 1.0, "ibn_w": 1.0, "angle_w": 0.02}),
    ("data_b", "B", {"query_prompt": "query: {text}", "doc_prompt": "passage: {text}"}),
    ("data_c", "C", {"cosine_w": 0.5, "pooling_strategy": "cls"}),
])
def test_tiny_bert_trains_each_format(request, tiny_bert, tmp_path, fixture, fmt, extra):
    data = request.getfixturevalue(fixture)
    rec = StepRecorder()
    cfg = TrainConfig(model_name_or_path=tiny_bert, train_name_or_path=str(data),
                      valid_name_or_path=str(data), save_dir=str(tmp_path / "out"), **{**FAST, **extra})
    cfg.eval_strategy = "epoch"
    cfg.save_strategy = "epoch"
    result = train(cfg, callbacks=[rec])
    assert result.global_step == 6 and not result.stopped  # 48 rows / batch 8
    losses = [lg["loss"] for lg in rec.logs if "loss" in lg]
    assert len(losses) == 6 and all(np.isfinite(losses))
    metrics = json.loads((Path(result.save_dir) / "metrics.json").read_text())
    key = "after/valid_spearman" if fmt == "A" else "after/valid_ndcg@10"
    assert 0.0 <= abs(metrics[key]) <= 1.0
    assert any(k.startswith("eval_") for lg in rec.logs for k in lg)  # evaluated during training
    card = (Path(result.save_dir) / "README.md").read_text()
    assert "## Metrics" in card and f"format {fmt}" in card
    saved = json.loads((Path(result.save_dir) / "train_config.json").read_text())
    assert TrainConfig.model_validate(saved) == cfg  # the resolved config round-trips
    if fmt == "B":
        st_cfg = json.loads((Path(result.save_dir) / "config_sentence_transformers.json").read_text())
        assert st_cfg["prompts"] == {"query": "query: ", "document": "passage: "}
    assert st_matches_ours(result.save_dir, ["a cat", "two dogs run fast", "x"]) < 1e-5


def test_real_minilm_few_steps_and_st_equality(tmp_path):
    rows = [json.loads(line) for line in (SHARED_DATA / "stsb" / "train.jsonl").read_text().splitlines()[:64]]
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TrainConfig(model_name_or_path=minilm_path(), train_name_or_path=str(train_file),
                      test_name_or_path=str(SHARED_DATA / "stsb" / "dev.jsonl"), max_steps=3, batch_size=16,
                      maxlen=64, save_dir=str(tmp_path / "m"), evaluate_before_training=False, eval_strategy="no",
                      save_strategy="no", learning_rate=2e-5, warmup_steps=0, cosine_w=1.0)
    result = train(cfg)
    assert result.global_step == 3
    assert result.metrics["after/test_spearman"] > 0.8  # 3 small steps keep MiniLM's quality
    texts = [r["text1"] for r in rows[:20]] + ["A much longer sentence that forces padding in a batch of short ones."]
    assert st_matches_ours(result.save_dir, texts) < 1e-5


def test_resume_continues_at_saved_step(tiny_bert, data_a, tmp_path):
    base = dict(model_name_or_path=tiny_bert, train_name_or_path=str(data_a), save_dir=str(tmp_path / "r"),
                **{**FAST, "save_strategy": "steps", "save_steps": 2, "save_total_limit": 2})
    first = train(TrainConfig(**{**base, "max_steps": 4}))
    assert (tmp_path / "r" / "checkpoints" / "checkpoint-4").is_dir() and first.global_step == 4
    rec = StepRecorder()
    second = train(TrainConfig(**{**base, "max_steps": 8, "resume_from_checkpoint": "last"}), callbacks=[rec])
    assert rec.steps[0] == 5 and second.global_step == 8


def test_bad_data_fails_before_model_load(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text1": "a", "text2": "b", "label": "x"}\n')
    cfg = TrainConfig(model_name_or_path=str(tmp_path / "no-such-model"), train_name_or_path=str(bad),
                      save_dir=str(tmp_path / "o"))
    with pytest.raises(DataError, match=r"bad.jsonl: row 1, column 'label': label must be a number"):
        train(cfg)


def test_cli_angle_trainer_flags(tiny_bert, data_b, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "plugin.train", "--model_name_or_path", tiny_bert, "--train_name_or_path",
           str(data_b), "--column_rename_mapping", "query:query", "--fp16", "0", "--ibn_w", "1.0", "--epochs", "1",
           "--batch_size", "16", "--save_dir", str(out), "--evaluate_before_training", "false",
           "--eval_strategy", "no", "--save_strategy", "no", "--pooling_strategy", "avg"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| global_step | | 3 |" in proc.stdout
    assert json.loads((out / "train_config.json").read_text())["pooling_strategy"] == "mean"
    bad = subprocess.run([sys.executable, "-m", "plugin.train", "--train_name_or_path", "x.jsonl", "--ibn_w", "-1"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "ibn_w: Input should be greater than or equal to 0" in bad.stderr


def test_last_complete_checkpoint_skips_half_written(tmp_path):
    from plugin.trainer import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "none") is None
    for step, complete in ((2, True), (4, True), (6, False)):  # 6: killed mid-save
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")


class ModelGrabber(TrainerCallback):
    """Keeps the model the Trainer trains, to inspect what train() built."""

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.model = model


def test_freeze_embeddings_keeps_token_embeddings_and_trains_the_rest(tiny_bert, data_a, tmp_path):
    import torch
    from transformers import AutoModel

    grab = ModelGrabber()
    result = train(TrainConfig(model_name_or_path=tiny_bert, train_name_or_path=str(data_a),
                               save_dir=str(tmp_path / "f"), freeze_embeddings=True, **FAST), callbacks=[grab])
    assert result.global_step == 6
    trainable = {n for n, p in grab.model.named_parameters() if p.requires_grad}
    assert not any("word_embeddings" in n for n in trainable) and trainable
    start, tuned = AutoModel.from_pretrained(tiny_bert), load(result.save_dir).model.backbone
    assert torch.equal(start.get_input_embeddings().weight, tuned.get_input_embeddings().weight)
    query = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(start.state_dict()[query], tuned.state_dict()[query])


@pytest.mark.parametrize("extra, kernel", [
    ({"bf16": True}, "eager"),                                  # CPU bf16: eager, SDPA's bf16 backward is slow
    ({"bf16": True, "attn_implementation": "sdpa"}, "sdpa"),    # an explicit choice wins
    ({}, "sdpa"),                                               # fp32: the library's default
])
def test_backbone_attention_kernel(tiny_bert, data_a, tmp_path, extra, kernel):
    grab = ModelGrabber()
    train(TrainConfig(model_name_or_path=tiny_bert, train_name_or_path=str(data_a), save_dir=str(tmp_path / "k"),
                      **{**FAST, "max_steps": 1, **extra}), callbacks=[grab])
    assert grab.model.backbone.config._attn_implementation == kernel


class FinalWeights(TrainerCallback):
    """The trained weights as the Trainer leaves them, before train() post-processes them."""

    def on_train_end(self, args, state, control, model=None, **kw):
        self.state = {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}


def test_wise_alpha_saves_the_weight_average_of_tuned_and_start(tiny_bert, data_a, tmp_path):
    from transformers import AutoModel

    final = FinalWeights()
    result = train(TrainConfig(model_name_or_path=tiny_bert, train_name_or_path=str(data_a),
                               save_dir=str(tmp_path / "w"), wise_alpha=0.25, **FAST), callbacks=[final])
    start = AutoModel.from_pretrained(tiny_bert).state_dict()
    saved = load(result.save_dir).model.backbone.state_dict()
    query = "encoder.layer.0.attention.self.query.weight"
    assert not np.allclose(final.state[query], start[query])  # it did train
    for name in (query, "embeddings.word_embeddings.weight", "encoder.layer.1.output.LayerNorm.bias"):
        expected = 0.25 * final.state[name] + 0.75 * start[name]
        assert np.abs((saved[name] - expected).numpy()).max() < 1e-6, name
