"""How does IEC keep ICM's conflict clips right? (docs/study-set.md, "How IEC keeps the conflict clips right",
hypotheses H-IEC and H-IEC-T.)

For every trained run of a study grid (``icm compare --grid experiments/study-large-iec-contrast.yaml``: ICM and
w/o IEC), every held-out clip of an ICM run is answered three ways with the same trained weights:

* ``trained``: as trained;
* ``mean``: y_iec replaced by its mean over the held-out clips (per frame position) — IEC's clip-to-clip information
  removed, its average contribution kept (mean ablation);
* ``zero``: y_iec set to zero.

It prints the accuracy on the conflict clips and on the other held-out clips per condition and seed, the paired
one-sided t-test of ``trained`` against each ablation on the conflict clips (the H-IEC decision), how the conflict
clips answered wrong are answered, and how IEC's self-sampling attention (Eq. 3) divides over y_moe and each scene
expert's outputs on the conflict clips against the other clips of the same label. For every run, ICM or w/o IEC:
the router's weight per expert on those clips, and the conflict clips answered again with the action scene of a
*positive* clip (the action swap). With both systems, the router's weight on the action expert on the conflict
clips, ICM against w/o IEC, paired by seed and clip (the H-IEC-T decision). ``--json`` writes every number.

    python experiments/iec_conflict.py runs/study-large-iec [--json runs/study-large-iec/iec_conflict.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONDITIONS = ("trained", "mean", "zero")
#: the scene that carries a conflict clip's label, and the label its smiling face tells
ACTION, FACE_LABEL = "action", "positive"


def _run_folders(root: Path) -> list[Path]:
    """The trained runs under a compare output folder (every folder holding a ``results.json``)."""
    found = sorted(p.parent for p in root.rglob("results.json"))
    if not found:
        raise SystemExit(f"{root}: no results.json below it (run the grid first)")
    return found


def measure_run(run: Path, batch_size: int = 8) -> dict:
    """One trained run's held-out answers under each condition (only ``trained`` for a model without IEC), the
    router's mean weight per expert per clip, and IEC's self-sampling attention shares per clip."""
    import torch

    from datasets_scripts.mini_set import conflict_clip_ids
    from evaluate_metrics.parser import parse_answer
    from inference.loading import load_model
    from trainers.collator import IcmDataCollator
    from trainers.demo import _examples_for
    from trainers.diagnostics import clip_router_weights, iec_attention_shares
    from trainers.evaluation import generate_example_answers, references_of

    result = json.loads((run / "results.json").read_text())
    model, processor = load_model(result["model_dir"])
    model.eval()
    config = result["recipe"]["data"]["configs"][0]
    examples, data_dir = _examples_for(result, config)
    conflicts = conflict_clip_ids(data_dir)
    ids = [examples[i]["clip_id"] for i in range(len(examples))]
    truth = [r["sentiment"] for r in references_of(examples)]
    batch = IcmDataCollator(processor, with_answers=False)(list(examples))
    with torch.no_grad():
        encoding = model.encode_scenes(batch["scene_features"], batch.get("scene_masks"))
    has_iec = model.iec is not None
    replacement = {}
    if has_iec:
        mean_iec = encoding.y_iec.mean(0, keepdim=True)
        replacement = {"mean": lambda out: mean_iec.expand_as(out), "zero": torch.zeros_like}
    answers = {}
    for condition in CONDITIONS if has_iec else ("trained",):
        hook = None
        if condition in replacement:
            hook = model.iec.register_forward_hook(lambda m, i, out, f=replacement[condition]: f(out))
        try:
            texts = generate_example_answers(model, processor, examples, batch_size=batch_size)
        finally:
            if hook is not None:
                hook.remove()
        answers[condition] = [parse_answer(t, config).sentiment for t in texts]
    right = {c: [float(a.lower() == t.lower()) for a, t in zip(answers[c], truth)] for c in answers}
    # the action swap: each conflict clip with the action scene (features and masks) of a clip whose face tells its
    # label, in turn (its fight replaced by no fight; the smiling face, the background and the video unchanged)
    conflict_rows = [i for i, c in enumerate(ids) if c in conflicts]
    donors = [i for i, t in enumerate(truth) if ids[i] not in conflicts and t.lower() == FACE_LABEL]
    swapped = []
    for n, i in enumerate(conflict_rows):
        row, donor = dict(examples[i]), examples[donors[n % len(donors)]]
        row["scene_features"] = {**row["scene_features"], ACTION: donor["scene_features"][ACTION]}
        row["scene_masks"] = {**row["scene_masks"], ACTION: donor["scene_masks"][ACTION]}
        swapped.append(row)
    swap_answers = [parse_answer(t, config).sentiment for t in generate_example_answers(model, processor, swapped)]
    return {
        "run": str(run),
        "seed": result["recipe"].get("seed"),
        "iec": has_iec,
        "scenes": list(model.config.active_scenes),
        "clips": ids,
        "truth": truth,
        "conflict": [i in conflicts for i in ids],
        "answers": answers,
        "right": right,
        "action_swap_answers": dict(zip([ids[i] for i in conflict_rows], swap_answers)),
        "router": clip_router_weights(encoding.router_probs),
        "attention_shares": (
            iec_attention_shares(model, batch["scene_features"], batch.get("scene_masks")).tolist() if has_iec else None
        ),
    }


def _paired_one_sided(a: list[float], b: list[float]) -> float:
    """One-sided p of mean(a) > mean(b) (``evaluate_metrics.functions.paired_t_test``)."""
    from evaluate_metrics.functions import paired_t_test

    return paired_t_test(a, b, alternative="greater")["pvalue"]


def _mean_rows(rows: list) -> list[float] | None:
    import numpy as np

    rows = [r for r in rows if r is not None]
    return np.mean(rows, axis=0).tolist() if rows else None


def report(measured: list[dict]) -> str:
    import numpy as np

    with_iec = [m for m in measured if m["iec"]]
    out = []
    if with_iec:
        lines = ["| seed | conflict: trained | mean-ablated | zero | other clips: trained | mean-ablated | zero |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        pooled = {c: {"conflict": [], "other": []} for c in CONDITIONS}
        wrong_answers: Counter = Counter()
        for m in with_iec:
            conflict = np.array(m["conflict"])
            row = []
            for part, sel in (("conflict", conflict), ("other", ~conflict)):
                for c in CONDITIONS:
                    values = list(np.array(m["right"][c])[sel])
                    pooled[c][part] += values
                    row.append(f"{sum(values):.0f} / {len(values)}")
            lines.append(f"| {m['seed']} | " + " | ".join(row) + " |")
            for i in np.flatnonzero(conflict):
                if not m["right"]["mean"][i]:
                    wrong_answers[m["answers"]["mean"][i] or "(unreadable)"] += 1
        out += ["IEC on the conflict clips: right / clips per seed, three ways with the same trained weights", ""]
        out += lines + ["", "| pooled over seeds | trained | mean-ablated | zero |", "|---|---:|---:|---:|"]
        for part in ("conflict", "other"):
            cells = [f"{100 * np.mean(pooled[c][part]):.1f} % ({sum(pooled[c][part]):.0f}/{len(pooled[c][part])})"
                     for c in CONDITIONS]
            out.append(f"| {part} clips | " + " | ".join(cells) + " |")
        out.append("")
        for c in ("mean", "zero"):
            for part in ("conflict", "other"):
                p = _paired_one_sided(pooled["trained"][part], pooled[c][part])
                out.append(f"trained > {c}-ablated on the {part} clips: one-sided paired p = {p:.3g}")
        out += ["", f"conflict clips wrong with y_iec mean-ablated, answered: {dict(wrong_answers)}"]
    scenes = measured[0]["scenes"]
    out += ["", "Per run, on the conflict clips and on the other clips of their label (negative): right, the router's",
            "mean weight per expert, and IEC's self-sampling attention share (y_moe, then each expert)", "",
            "| run | IEC | conflict right | router on conflict clips (" + ", ".join(scenes) + ") | router on other "
            "negative clips | IEC attention on conflict clips (y_moe, " + ", ".join(scenes) + ") | on other negative | "
            "conflict clips right with the action scene of a positive clip |",
            "|---|---|---:|---|---|---|---|---:|"]
    fmt = lambda v: "–" if v is None else " / ".join(f"{x:.2f}" for x in v)  # noqa: E731
    for m in measured:
        conflict = np.array(m["conflict"])
        labels = {m["truth"][i] for i in np.flatnonzero(conflict)}
        labels_of_conflicts = [m["truth"][i].lower() for i in np.flatnonzero(conflict)]
        other = np.array([t in labels for t in m["truth"]]) & ~conflict
        router = [m["router"][i] for i in range(len(conflict))]
        att = m["attention_shares"]
        cells = [
            Path(m["run"]).parent.name + f" ({Path(m['run']).parent.parent.name})",
            "yes" if m["iec"] else "no",
            f"{sum(np.array(m['right']['trained'])[conflict]):.0f} / {int(conflict.sum())}",
            fmt(_mean_rows([router[i] for i in np.flatnonzero(conflict)])),
            fmt(_mean_rows([router[i] for i in np.flatnonzero(other)])),
            fmt(_mean_rows([att[i] for i in np.flatnonzero(conflict)]) if att else None),
            fmt(_mean_rows([att[i] for i in np.flatnonzero(other)]) if att else None),
            f"{sum(a.lower() == t for a, t in zip(m['action_swap_answers'].values(), labels_of_conflicts)):.0f}"
            f" / {len(m['action_swap_answers'])}",
        ]
        out.append("| " + " | ".join(cells) + " |")
    out += _router_contrast(measured)
    return "\n".join(out)


def _router_contrast(measured: list[dict]) -> list[str]:
    """H-IEC-T: the router's weight on the action expert on the conflict clips, ICM against w/o IEC, paired by seed
    and clip."""
    import numpy as np

    def weights(m):
        j = m["scenes"].index(ACTION)
        return {c: m["router"][i][j] for i, c in enumerate(m["clips"]) if m["conflict"][i] and m["router"][i]}

    icm = {m["seed"]: weights(m) for m in measured if m["iec"]}
    without = {m["seed"]: weights(m) for m in measured if not m["iec"]}
    pairs = [(icm[s][c], without[s][c]) for s in sorted(set(icm) & set(without)) for c in icm[s] if c in without[s]]
    if not pairs:
        return []
    a, b = (list(x) for x in zip(*pairs))
    return ["", f"H-IEC-T: router weight on the {ACTION} expert on the conflict clips, ICM {np.mean(a):.3f} ± "
            f"{np.std(a, ddof=1):.3f} against w/o IEC {np.mean(b):.3f} ± {np.std(b, ddof=1):.3f} over {len(pairs)} "
            f"paired clips: one-sided paired p = {_paired_one_sided(a, b):.3g}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="a compare output folder of ICM runs (or one run folder)")
    parser.add_argument("--json", type=Path, help="write every clip's answers and attention shares here")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    measured = []
    for run in _run_folders(args.root):
        print(f"measuring {run}", file=sys.stderr, flush=True)
        measured.append(measure_run(run, args.batch_size))
    if args.json:
        args.json.write_text(json.dumps(measured, indent=1))
    print(report(measured))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
