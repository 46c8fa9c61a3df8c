#!/usr/bin/env python3
"""Does keeping Dropout during QAT cost int8 accuracy? QAT fine-tunes from one finished float run,
with Dropout kept (as training code version 1 did) and left out (the current default), per seed.

    TF_USE_LEGACY_KERAS=1 python tools/qat_dropout.py runs/100cls_GRAY/original_haverland --seeds 0 1 2

Each QAT run uses the training code itself (``train.run_phase``, best validation epoch), in a
temporary folder; the run directory is only read. Prints a Markdown table (docs/experiments.md) and
writes the rows as JSON next to it (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import fields, replace
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from digitrec import export, train  # noqa: E402
from digitrec.models import create_model, qat  # noqa: E402


def config_of(run: Path) -> train.TrainConfig:
    doc = json.loads((run / "config.json").read_text())
    known = {f.name for f in fields(train.TrainConfig)}
    cfg = {k: v for k, v in doc.items() if k in known}
    return train.TrainConfig(**{**cfg, "teachers": tuple(cfg.get("teachers", ()))})


def softmax_input_scale(model_bytes: bytes) -> float | None:
    """Quantization step of the logits (the SOFTMAX input), in logit units."""
    it = export._litert(model_bytes)  # noqa: SLF001 - the exporter's LiteRT loader
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    for op in it._get_ops_details():  # noqa: SLF001
        if op["op_name"] == "SOFTMAX":
            return float(tensors[op["inputs"][0]]["quantization"][0])
    return None


def qat_once(run: Path, cfg: train.TrainConfig, splits: train.Splits, seed: int, keep_dropout: bool) -> dict:
    float_model = create_model(cfg.model, cfg.classes, cfg.color)
    float_model.load_weights(str(run / "float.weights.h5"))
    train._keras().utils.set_random_seed(seed)  # noqa: SLF001
    qmodel = qat.quantize(float_model, keep_dropout=keep_dropout)
    qcfg = replace(cfg, seed=seed, patience=max(cfg.patience, cfg.qat_epochs))
    with tempfile.TemporaryDirectory() as tmp:
        state = train.run_phase(qmodel, splits, qcfg, Path(tmp) / "qat", cfg.qat_lr, cfg.qat_epochs, "experiment")
    model_bytes = export.strip_names(export.convert_int8(qmodel, export.representative_subset(splits.x["train"], 500)))
    row = {"dropout_in_qat": keep_dropout, "seed": seed, "val_qat": state.get("best"),
           "logit_step": softmax_input_scale(model_bytes)}
    for part in ("val", "test"):
        acc = export.evaluate(model_bytes, float_model, splits.x[part], splits.y[part], cfg.classes)
        row[f"{part}_float"], row[f"{part}_int8"] = acc["float_test"], acc["int8_test"]
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a finished `digitrec train` run (float.weights.h5, config.json)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--data", default=os.environ.get("DIGITREC_DATA"))
    p.add_argument("--json", type=Path, default=Path("reports/qat_dropout.json"))
    args = p.parse_args()
    if not args.data:
        raise SystemExit("--data (or $DIGITREC_DATA) is required")
    cfg = config_of(args.run)
    splits = train.load_splits(args.data, cfg.color, cfg.classes, cfg.split_mode, cfg.limit, cfg.seed)
    if cfg.teachers:
        splits = replace(splits, teacher=train.teacher_probabilities(
            cfg.teachers, splits.x["train"], cfg.classes, cfg.color, splits.info, Path("exported_models")))
    rows = [qat_once(args.run, cfg, splits, s, keep) for keep in (True, False) for s in args.seeds]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1))
    print("| Dropout during QAT | seed | val float | val int8 | test float | test int8 | logit step |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        pct = [f"{100 * r[k]:.1f} %" for k in ("val_float", "val_int8", "test_float", "test_int8")]
        print(f"| {'kept' if r['dropout_in_qat'] else 'left out'} | {r['seed']} | {' | '.join(pct)} | "
              f"{r['logit_step']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
