"""`digitrec compare`: what the device answered against what the PC computes.

Reads one or more results JSONL files of ``digitrec device bench`` (tensor and raw
runs, GRAY and RGB models) and optionally the PC benchmark's JSON, and writes a
Markdown report, a JSON summary, a gallery of the images where device and PC
disagree and a latency histogram. Microseconds measured on the virtual device are the
host's and are labelled so; a real board's come from its own timer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from digitrec.device import read_results, summarize

GALLERY_MAX = 40


def load_run(path: Path) -> dict[str, Any]:
    """One results file: its last meta, its rows and its summary (recomputed if missing)."""
    metas, rows, sums = read_results(path)
    if not metas:
        raise ValueError(f"{path} is not a device bench results file (no meta line)")
    meta = metas[-1]
    summary = dict(sums[-1]) if sums else {}
    summary.update(summarize(rows, meta))  # always from every row, resumed sessions included
    summary.setdefault("baud", meta.get("baud"))
    return {"path": path, "meta": meta, "rows": rows, "summary": summary,
            "disagreements": [r for r in rows if r.get("device_class") is not None
                              and r["device_class"] != r["pc_class"]]}


def timing_label(summary: dict[str, Any]) -> str:
    return "host (virtual device)" if summary.get("chip") == "virtual" else f"device ({summary.get('chip')})"


def pc_rows(bench_json: Path | None) -> list[dict[str, Any]]:
    if bench_json is None:
        return []
    data = json.loads(Path(bench_json).read_text())
    return data if isinstance(data, list) else data.get("rows", [])


def match_pc(run: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    sha = run["summary"].get("model_sha256")
    return next((r for r in rows if r.get("sha256") == sha), None)


def confidence_on_device(run: dict[str, Any], pc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The PC benchmark's confidence threshold (int8, chosen on validation) applied to the device's
    own scores: the fraction it answers and their accuracy, beside the PC's scores on the same images."""
    cut = (pc or {}).get("confidence_threshold_int8")
    rows = [r for r in run["rows"] if r.get("device_class") is not None and r.get("scores")]
    if cut is None or not rows:
        return None

    def figures(scores: str, cls: str) -> tuple[float, float | None]:
        kept = [r for r in rows if max(r[scores]) >= cut]
        right = sum(r[cls] == r["label"] for r in kept)
        return len(kept) / len(rows), (right / len(kept) if kept else None)

    dev, host = figures("scores", "device_class"), figures("pc_scores", "pc_class")
    return {"threshold_int8": cut, "target": pc.get("confidence_target"), "images": len(rows),
            "answered": dev[0], "accuracy_answered": dev[1], "pc_answered": host[0], "pc_accuracy_answered": host[1]}


def raw_vs_tensor(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each model with a tensor and a raw run: images where both modes give the same answer."""
    out = []
    for t in (r for r in runs if r["summary"].get("mode") == "tensor"):
        for raw in (r for r in runs if r["summary"].get("mode") == "raw"):
            if raw["summary"].get("model_sha256") != t["summary"].get("model_sha256"):
                continue
            tensor_rows = {x["path"]: x for x in t["rows"] if x.get("device_class") is not None}
            both = [(x, tensor_rows[x["path"]]) for x in raw["rows"] if x["path"] in tensor_rows
                    and x.get("device_class") is not None]
            out.append({"model": raw["summary"].get("model"), "tensor": t["path"].name, "raw": raw["path"].name,
                        "images": len(both), "same_class": sum(a["device_class"] == b["device_class"] for a, b in both),
                        "same_scores": sum(a["scores"] == b["scores"] for a, b in both),
                        "sent_raw": sum(str(a.get("sent", "")).startswith("raw") for a, _ in both)})
    return out


def preprocess_cost(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median on-chip preprocessing (raw mode) per input colour, if measured."""
    out: dict[str, Any] = {}
    for run in runs:
        s = run["summary"]
        if s.get("mode") == "raw" and s.get("raw_sent"):
            out[str(s.get("color"))] = {"preprocess_us_median": s["device_preprocess_us_median"],
                                        "infer_us_median": s["device_infer_us_median"],
                                        "timings": timing_label(s), "model": s.get("model")}
    return out


# ---------------------------------------------------------------- figures

def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _log_bins(values: list[float]) -> Any:
    import numpy as np

    lo, hi = max(1.0, min(values)), max(2.0, max(values))
    return np.logspace(np.log10(lo), np.log10(hi * 1.05), 40)


def plot_latency(runs: list[dict[str, Any]], path: Path) -> None:
    """Invoke and preprocessing times side by side (log axis: microseconds to milliseconds)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for run in runs:
        s = run["summary"]
        infer = [r["infer_us"] for r in run["rows"] if r.get("infer_us")]
        pre = [r["preprocess_us"] for r in run["rows"] if str(r.get("sent", "")).startswith("raw")
               and r.get("preprocess_us")]
        for ax, vals in ((axes[0], infer), (axes[1], pre)):
            if vals:
                ax.hist(vals, bins=_log_bins(vals), alpha=0.6, label=f"{s['model']} {s['mode']}")
    labels = ", ".join(sorted({timing_label(r["summary"]) for r in runs}))
    from matplotlib.ticker import NullFormatter

    for ax, what in ((axes[0], "Invoke()"), (axes[1], "preprocessing (raw mode)")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"microseconds [{labels}]")
        ax.set_ylabel("images")
        ax.set_title(f"per image: {what}", fontsize=10)
        if ax.has_data():
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no raw-mode run", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_disagreements(runs: list[dict[str, Any]], path: Path) -> int:
    """Gallery of device/PC disagreements (original crops); returns how many are shown."""
    from digitrec.preprocess import decode_rgb

    items = [(run, r) for run in runs for r in run["disagreements"]][:GALLERY_MAX]
    plt = _plt()
    if not items:
        fig, ax = plt.subplots(figsize=(4, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "device and PC agree on every image", ha="center", va="center")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return 0
    cols = min(8, len(items))
    rows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 2.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (run, r) in zip(axes.flat, items, strict=False):
        try:
            ax.imshow(decode_rgb(Path(run["meta"].get("data", ".")) / r["path"]))
        except (OSError, ValueError):
            ax.text(0.5, 0.5, "missing", ha="center")
        ax.set_title(f"y{r['label']} dev{r['device_class']}\npc{r['pc_class']} {run['summary']['mode']}", fontsize=7)
    fig.suptitle("device vs PC disagreements (y: label)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(items)


# ---------------------------------------------------------------- report

def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:,.0f}"


TABLE_COLS = ["run", "board", "model", "mode", "images", "device acc", "PC acc", "agreement",
              "agreement (PC TFLM)", "scores identical (PC TFLM)", "invoke us (med)", "preprocess us (med)", "TIMED_RUN us (med)",
              "link % of line", "retries", "resets", "timings"]


def table_rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for run in runs:
        s = run["summary"]
        util = s.get("link_utilization")
        out.append([run["path"].name, f"{s.get('board')}/{s.get('chip')}", str(s.get("model")), str(s.get("mode")),
                    str(s["images"]), _pct(s["device_accuracy"]), _pct(s["host_accuracy"]), _pct(s["agreement"]),
                    _pct(s.get("agreement_tflm")), _pct(s.get("scores_identical_tflm")), _num(s["device_infer_us_median"]),
                    _num(s["device_preprocess_us_median"]), _num(s.get("timed_run_us_median")),
                    "unpaced pty" if util is None else f"{100 * util:.1f} % of {s.get('baud')} baud",
                    str(s.get("retries", "-")), str(s.get("resets", "-")), timing_label(s)])
    return out


def markdown(runs: list[dict[str, Any]], pcs: list[dict[str, Any]], cost: dict[str, Any],
             figures: dict[str, str], confs: list[dict[str, Any] | None]) -> str:
    lines = ["# Host vs device", "",
             "Device answers from `digitrec device bench`; PC answers on the same int8 inputs from LiteRT "
             "without default delegates (the PC benchmark's interpreter: *agreement*) and from TFLite Micro on "
             "the PC (*PC TFLM*), the interpreter, kernels and rounding the firmware compiles. LiteRT rounds "
             "differently (its optimized DEPTHWISE_CONV_2D; FULLY_CONNECTED's requantization), which moves a "
             "score by an LSB or more; a device that computes the graph right matches PC TFLM score for score, "
             "up to the rounding of a board's optimized (ESP-NN) kernels.", "",
             "| " + " | ".join(TABLE_COLS) + " |", "|" + " --- |" * len(TABLE_COLS)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(runs)]
    if any(r["summary"].get("chip") == "virtual" for r in runs):
        lines += ["", "Runs on the *virtual device* report host microseconds (the PC running the firmware's "
                  "portable core and TFLite Micro), not ESP32 timings."]
    lines += _pc_section(runs, pcs) + _confidence_section(runs, confs) + _raw_section(raw_vs_tensor(runs)) + _cost_section(cost) + _link_section(runs)
    lines += ["", "## Disagreements", ""]
    dis = [(run, r) for run in runs for r in run["disagreements"]]
    if not dis:
        lines.append("None: the device's class equals the PC's on every image.")
    for run, r in dis[:200]:
        ref = f", PC TFLM {r['tflm_class']}" if "tflm_class" in r else ""
        lines.append(f"- `{r['path']}` ({run['summary']['mode']}): label {r['label']}, device {r['device_class']}, "
                     f"PC {r['pc_class']}{ref}; scores device {r['scores']} vs PC {r['pc_scores']}")
    lines += ["", f"![disagreements]({figures['gallery']})", "", "## Latency", "",
              f"![latency]({figures['latency']})", ""]
    return "\n".join(lines)


def _pc_section(runs: list[dict[str, Any]], pcs: list[dict[str, Any]]) -> list[str]:
    if not pcs:
        return []
    out = ["", "## PC benchmark (`digitrec bench`)", ""]
    for run in runs:
        pc = match_pc(run, pcs)
        s = run["summary"]
        if pc is None:
            out.append(f"- {s['model']}: no PC benchmark row with sha256 {str(s['model_sha256'])[:12]}...")
            continue
        ips = pc.get("pc_inf_per_s")
        pc_us = f"{1e6 / ips:,.0f} us per inference [PC]" if ips else "no PC speed"
        dev_us = s.get("timed_run_us_median")
        out.append(f"- {s['model']} ({run['path'].name}, {s.get('mode')} mode): PC accuracy "
                   f"{_pct(pc.get('accuracy'))} on {pc.get('images')} images of split "
                   f"{pc.get('split')}; {pc_us}; TIMED_RUN {_num(dev_us)} us [{timing_label(s)}]")
    return out


def _confidence_section(runs: list[dict[str, Any]], confs: list[dict[str, Any] | None]) -> list[str]:
    found = [(run, c) for run, c in zip(runs, confs, strict=True) if c]
    if not found:
        return []
    out = ["", "## Reading with the PC benchmark's confidence threshold", ""]
    for run, c in found:
        s = run["summary"]
        out.append(f"- {s['model']} ({s['mode']}): answer when the top int8 score is at least {c['threshold_int8']} "
                   f"(target {_pct(c['target'])} on validation): the device answers {_pct(c['answered'])} of "
                   f"{c['images']} images, {_pct(c['accuracy_answered'])} of them right; the PC's scores "
                   f"{_pct(c['pc_answered'])} and {_pct(c['pc_accuracy_answered'])}")
    return out


def _raw_section(pairs: list[dict[str, Any]]) -> list[str]:
    if not pairs:
        return []
    out = ["", "## Raw mode vs tensor mode (on-chip preprocessing)", ""]
    for p in pairs:
        out.append(f"- {p['model']} ({p['raw']} vs {p['tensor']}): {p['same_class']} of {p['images']} classes and "
                   f"{p['same_scores']} of {p['images']} score vectors identical; {p['sent_raw']} crops were sent "
                   "raw, the rest (larger than the device's raw limits) as tensors")
    return out


def _cost_section(cost: dict[str, Any]) -> list[str]:
    if not cost:
        return []
    out = ["", "## On-chip preprocessing (raw mode)", ""]
    for color, c in sorted(cost.items()):
        out.append(f"- {color} model {c['model']}: preprocess {_num(c['preprocess_us_median'])} us, invoke "
                   f"{_num(c['infer_us_median'])} us (medians, {c['timings']})")
    if {"GRAY", "RGB"} <= set(cost) and cost["GRAY"]["preprocess_us_median"]:
        ratio = cost["RGB"]["preprocess_us_median"] / cost["GRAY"]["preprocess_us_median"]
        out.append(f"- RGB / GRAY preprocessing cost: {ratio:.2f}x")
    return out


def _link_section(runs: list[dict[str, Any]]) -> list[str]:
    out = ["", "## Link", ""]
    for run in runs:
        s = run["summary"]
        if s.get("link_bytes_per_s") is None:
            continue
        if s.get("link_utilization") is None:
            out.append(f"- {run['path'].name}: {s['link_bytes_per_s']:,.0f} B/s over an unpaced pseudo-terminal "
                       "(no line rate: run the virtual device with --baud to model a UART)")
            continue
        baud = s["baud"]
        out.append(f"- {run['path'].name}: {s['link_bytes_per_s']:,.0f} B/s on the busier direction = "
                   f"{100 * s['link_utilization']:.1f} % of the {baud} baud line rate ({baud / 10:,.0f} B/s, 10 bits "
                   f"per byte); payload {100 * s.get('link_payload_utilization', 0):.1f} %")
    return out


def compare(results: list[Path], bench_json: Path | None, report: Path) -> dict[str, Any]:
    """Write the report files; return the JSON summary."""
    runs = [load_run(Path(p)) for p in results]
    pcs = pc_rows(bench_json)
    report.mkdir(parents=True, exist_ok=True)
    figures = {"gallery": "disagreements.png", "latency": "latency.png"}
    plot_latency(runs, report / figures["latency"])
    shown = plot_disagreements(runs, report / figures["gallery"])
    cost = preprocess_cost(runs)
    matched = [match_pc(run, pcs) for run in runs]
    confs = [confidence_on_device(run, pc) for run, pc in zip(runs, matched, strict=True)]
    (report / "compare.md").write_text(markdown(runs, pcs, cost, figures, confs))
    doc = {"runs": [{**run["summary"], "results": str(run["path"]),
                     "disagreements": [r["path"] for r in run["disagreements"]], "pc_bench": pc, "confidence": c}
                    for run, pc, c in zip(runs, matched, confs, strict=True)],
           "preprocess_cost": cost, "raw_vs_tensor": raw_vs_tensor(runs), "gallery_images": shown,
           "files": {k: str(report / v) for k, v in figures.items()} | {"markdown": str(report / "compare.md")}}
    (report / "compare.json").write_text(json.dumps(doc, indent=1, default=str))
    print_table(runs)
    return doc


def print_table(runs: list[dict[str, Any]]) -> None:
    rows = [TABLE_COLS, *table_rows(runs)]
    label = max(map(len, TABLE_COLS)) + 2
    for col in range(len(TABLE_COLS)):  # transposed: one line per figure reads better in a terminal
        print(f"{rows[0][col]:<{label}}" + "".join(f"{r[col]:<28}" for r in rows[1:]))


def run(args: argparse.Namespace) -> int:
    try:
        doc = compare([Path(p) for p in args.results], Path(args.bench) if args.bench else None, Path(args.report))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {doc['files']['markdown']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="host vs device report from device bench results",
                       description="Compare a device's answers and timings with the PC's.")
    p.add_argument("results", nargs="+", help="results JSONL of `digitrec device bench` (several: tensor/raw, GRAY/RGB)")
    p.add_argument("--bench", help="PC benchmark JSON (`digitrec bench --json`) for PC accuracy and speed")
    p.add_argument("--report", default="reports/compare", help="output folder (default reports/compare)")
    p.set_defaults(func=run)
