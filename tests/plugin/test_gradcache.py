"""GradCache (mini_batch_size): the gradients of the whole batch, computed chunk by chunk."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainingArguments

from plugin import TrainConfig
from plugin.data import Collator, PairDataset, column_prompts, load_examples, positive_threshold
from plugin.gradcache import gradcache_step, split_rows
from plugin.llm import load_backbone
from plugin.model import AnglEModel, load_tokenizer
from plugin.trainer import AnglETrainer


def no_dropout(model: torch.nn.Module) -> torch.nn.Module:
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


def make_trainer(model_path: str, data: str, tmp_path, dropout: bool = False, **overrides):
    """An AnglETrainer around the tiny BERT and the first batch of `data` (as train() builds them)."""
    cfg = TrainConfig(model_name_or_path=model_path, train_name_or_path=data, save_dir=str(tmp_path / "o"),
                      **{"batch_size": 16, **overrides})
    ex = load_examples(data)
    tok = load_tokenizer(model_path)
    backbone = load_backbone(model_path)
    model = AnglEModel(backbone if dropout else no_dropout(backbone), cfg.pooling_strategy)
    ds = PairDataset(ex, tok, 64, column_prompts(ex.format, None, None, None), 42,
                     n_negatives=cfg.train_group_size - 1 if ex.format == "C" else 1)
    args = TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True, report_to="none",
                             per_device_train_batch_size=cfg.batch_size)
    trainer = AnglETrainer(model=model, args=args, angle_config=cfg, data_format=ex.format,
                           positive_label=positive_threshold(ex.labels or [], None), lengths=ds.lengths())
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which these tests skip
    batch = Collator(ds, tok.pad_token_id)([ds[i] for i in range(cfg.batch_size)])
    return trainer, batch


def step_grads(trainer, batch) -> tuple[float, dict[str, torch.Tensor]]:
    loss = trainer.training_step(trainer.model, batch)
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return float(loss), grads


def assert_same_grads(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    assert a.keys() == b.keys() and len(a) > 10
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < atol, worst


@pytest.mark.parametrize("fixture, extra", [
    ("data_a", {"cosine_w": 1.0, "ibn_w": 1.0, "angle_w": 0.02}),  # CoSENT, in-batch pairs, angle
    ("data_b", {}),  # InfoNCE
])
def test_mini_batches_give_the_full_batch_gradients(request, tiny_bert, tmp_path, fixture, extra):
    data = str(request.getfixturevalue(fixture))
    full_loss, full = step_grads(*make_trainer(tiny_bert, data, tmp_path, **extra))  # batch 16 in one pass
    trainer, batch = make_trainer(tiny_bert, data, tmp_path, mini_batch_size=4, **extra)
    calls: list[int] = []
    trainer.model.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    cached_loss, cached = step_grads(trainer, batch)
    assert calls == [8] * 8  # 4 examples x 2 texts per forward: 4 chunks without grad, 4 with
    assert abs(cached_loss - full_loss) < 1e-5
    assert_same_grads(full, cached)


def test_format_c_with_group_and_gradient_accumulation_scaling(tiny_bert, tmp_path):
    from tests.conftest import _sentence, write_jsonl

    rows = [{"query": _sentence(i, 1), "pos": [_sentence(i, 2)], "neg": [_sentence(i + k, 5) for k in (3, 4, 6)]}
            for i in range(16)]
    data = str(write_jsonl(tmp_path / "c.jsonl", rows))
    full_loss, full = step_grads(*make_trainer(tiny_bert, data, tmp_path, train_group_size=3, cosine_w=0.5))
    trainer, batch = make_trainer(tiny_bert, data, tmp_path, train_group_size=3, cosine_w=0.5, mini_batch_size=8)
    trainer.current_gradient_accumulation_steps = 2  # the backpropagated loss is divided by it, as HF does
    loss, cached = step_grads(trainer, batch)
    assert batch["input_ids"].size(0) == 16 * 4  # query, positive, 2 negatives
    assert abs(2 * loss - full_loss) < 1e-5
    assert_same_grads({k: v / 2 for k, v in full.items()}, cached)


def test_rng_replay_gives_the_same_dropout_masks(tiny_bert, data_b, tmp_path):
    """With dropout on, the re-run of each chunk must see the embeddings the loss was computed on."""
    trainer, batch = make_trainer(tiny_bert, str(data_b), tmp_path, dropout=True)
    model = trainer.model.train()
    outs: list[torch.Tensor] = []

    def forward(ids, mask):
        out = model(input_ids=ids, attention_mask=mask)
        outs.append(out.detach().clone())
        return out

    chunks = split_rows(batch["input_ids"], batch["attention_mask"], 8)
    torch.manual_seed(0)
    gradcache_step(forward, chunks, lambda e: e.pow(2).sum(), lambda s: s.backward())
    first, second = outs[:4], outs[4:]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    with torch.no_grad():  # without the replay the masks differ: the equality above is the RNG restore's doing
        assert not torch.equal(first[0], model(input_ids=chunks[0][0], attention_mask=chunks[0][1]))


def test_split_rows_trims_trailing_padding_only():
    ids = torch.tensor([[5, 6, 0, 0], [5, 0, 0, 0], [5, 6, 7, 0], [5, 6, 7, 8]])
    mask = (ids != 0).long()
    a, b = split_rows(ids, mask, 2)
    assert a[0].shape == (2, 2) and b[0].shape == (2, 4)
    left = torch.tensor([[0, 0, 5, 6], [0, 5, 6, 7]])  # left padding: nothing to trim, positions unchanged
    assert split_rows(left, (left != 0).long(), 2)[0][0].shape == (2, 4)


def test_row_groups_cut_each_column_to_its_own_length_with_the_same_embeddings_and_gradients(tiny_bert):
    """AnglEModel(row_groups=n): short queries no longer pay for the documents' padding, exactly."""
    tok = load_tokenizer(tiny_bert)
    model = AnglEModel(no_dropout(load_backbone(tiny_bert)), "mean")
    queries = [f"query {i}" for i in range(4)]
    docs = [" ".join(f"word{j}" for j in range(20 + 3 * i)) for i in range(4)]
    batch = tok(queries + docs, padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    calls = []

    def run(row_groups: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        emb = model(ids, mask, row_groups=row_groups)
        (emb.square().sum() + emb[:, 0].sum()).backward()  # any loss of the embeddings
        return emb.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    hook = model.backbone.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["input_ids"].shape),
                                                    with_kwargs=True)
    whole, g_whole = run(1)
    split, g_split = run(2)
    hook.remove()
    assert calls[0] == ids.shape and len(calls) == 3  # one call, then one per column
    assert calls[1][1] < calls[2][1] == ids.shape[1]  # the query half is cut to its own longest text
    assert torch.allclose(whole, split, atol=1e-5)
    assert g_whole.keys() == g_split.keys() and len(g_whole) > 10
    for name, g in g_whole.items():  # fp32 sums in another order: equal to a relative 1e-5
        if name.endswith("key.bias"):  # its true gradient is 0 (softmax ignores a shift): rounding noise only
            continue
        assert torch.allclose(g, g_split[name], rtol=1e-4, atol=1e-5 * g.abs().max().item()), name
