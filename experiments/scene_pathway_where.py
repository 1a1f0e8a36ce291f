"""Where is the clip-to-clip variation of the scene tokens lost? For a trained run of ``scene_pathway.py`` (or any
``run_recipe`` output folder), the norm and the relative spread across the held-out clips of every stage of
``Projector(Norm(y_moe + y_iec))``: each scene expert's output, y_moe, y_iec (and its self-sampling and
cross-sampling parts), the normalised sum and the scene tokens, with the router's mean weights.

    python experiments/scene_pathway_where.py runs/scene-pathway/scene-only-seed0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import torch

    from trainers.demo import _examples_for
    from inference.loading import load_model
    from trainers.collator import IcmDataCollator
    from trainers.diagnostics import relative_spread

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder holding results.json")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="load a model saved by another version of this package (runs its saved code)")
    args = parser.parse_args(argv)
    result = json.loads((Path(args.run) / "results.json").read_text())
    model, processor = load_model(result["model_dir"], trust_remote_code=args.trust_remote_code)
    model.eval()
    config = result["recipe"]["data"]["configs"][0]
    examples, _ = _examples_for(result, config)
    batch = IcmDataCollator(processor, with_answers=False)(list(examples))
    captured = {}
    hooks = [
        model.iec.self_sampling.register_forward_hook(lambda m, i, o: captured.setdefault("iec.y_m (self-sampling)", o)),
        model.iec.cross_sampling.register_forward_hook(lambda m, i, o: captured.setdefault("iec.y_x (cross-sampling)", o)),
        model.scene_norm.register_forward_hook(lambda m, i, o: captured.setdefault("Norm(y_moe + y_iec)", o)),
    ] if model.iec is not None else []
    with torch.no_grad():
        encoding = model.encode_scenes(batch["scene_features"], batch.get("scene_masks"))
        sbm = model.sbm(batch["scene_features"], batch.get("scene_masks"))
    for hook in hooks:
        hook.remove()
    stages = {f"expert {s}": sbm.expert_outputs[:, :, j] for j, s in enumerate(model.config.active_scenes)}
    stages["y_moe"] = encoding.y_moe
    if encoding.y_iec is not None:
        stages.update({k: v for k, v in captured.items() if "iec" in k})
        stages["y_iec"] = encoding.y_iec
    stages.update({k: v for k, v in captured.items() if "iec" not in k})
    stages["scene tokens"] = encoding.scene_tokens
    print(f"{len(examples)} held-out {config} clips of {args.run}")
    print("| stage | mean norm | relative spread across clips |")
    print("|---|---:|---:|")
    for name, value in stages.items():
        value = value.float()
        print(f"| {name} | {float(value.norm(dim=-1).mean()):.3g} | {relative_spread(value):.4f} |")
    probs = encoding.router_probs.float()
    valid = probs.sum(-1) > 0
    weights = probs[valid].mean(0).tolist()
    print("router:", ", ".join(f"{s} {w:.4f}" for s, w in zip(model.config.active_scenes, weights)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
