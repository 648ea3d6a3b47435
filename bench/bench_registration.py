"""Global registration on framing cases (docs/quality.md, "Framing", issue 9): how far the
reference frame `models/registration.py` finds lies from the window the case was cut with.

    python bench/bench_registration.py DATASET [--identities cat,monkey]

For every pose pair of the dataset's (chosen) identities, the `--framing` case
(models/eval_variants.py) is built as `chromaflow evaluate` builds it: either close-up
references for the full page ("R") or a close-up page for the full references ("P"). Each
reference is registered onto the page at analysis size and its frame compared with the one
the window implies: error = |size - true size| / true size + |center - true center| / true
size. The views are different drawings of one character, so "true" is only roughly true.
Prints the share of references within 0.15 and 0.3 per case kind, and the median error.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    from chromaflow.conf import load_config
    from chromaflow.models.colorizers.region import RegionColorizer, _analysis_size
    from chromaflow.models.eval_variants import case_seed, close_up_window
    from chromaflow.models.evaluation import case_references, load_identity_views, make_pairs, pair_case, pair_key
    from chromaflow.models.lines import extract_lines
    from chromaflow.models.registration import Strokes, align_frames
    from chromaflow.models.segmentation import ink_mask
    from chromaflow.storage.eval_dataset import scan_eval_dataset
    from chromaflow.storage.images import resize_longest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--identities", default="", help="comma-separated (default: every pose identity)")
    args = parser.parse_args()
    config = load_config()
    dataset = scan_eval_dataset(args.dataset)
    wanted = set(filter(None, args.identities.split(",")))
    errors: dict[str, list[float]] = {"R": [], "P": []}
    for identity in dataset.identities:
        if identity.kind != "pose" or (wanted and identity.name not in wanted):
            continue
        views = load_identity_views(dataset, identity.name, config, [])
        for pair in make_pairs(identity.name, identity.kind, views):
            # The window(s) the case is cut with: the same draws as apply_condition makes.
            rng = np.random.default_rng(case_seed(pair_key(pair), "framing"))
            close_refs = rng.random() < 0.5
            windows = ([close_up_window(r.color, rng, head=(k % 2 == 0)) for k, r in enumerate(pair.references)]
                       if close_refs else [close_up_window(pair.truth.color, rng, head=True)])
            case = pair_case(pair, "line", "framing")
            art = extract_lines(resize_longest(case.page, config.colorize.work_size), config.lines)
            labels = _analysis_size(RegionColorizer().segment(art.lines).labels)
            page = Strokes(labels == 0)
            a = labels.shape[1] / pair.truth.color.shape[1]  # analysis pixels per dataset pixel
            size = pair.truth.color.shape[1]
            pcx, pcy, ps = page.frame
            for k, ref in enumerate(case_references(pair, case, config)):
                x0, y0, x1, _ = windows[k] if close_refs else windows[0]
                side = x1 - x0
                if close_refs:  # page pixel p -> reference (p / a - x0) * size / side * a
                    true = ((pcx - x0 * a) * size / side, (pcy - y0 * a) * size / side, ps * size / side)
                else:  # page pixel p -> reference (x0 + p / a * side / size) * a
                    true = ((x0 + pcx / a * side / size) * a, (y0 + pcy / a * side / size) * a, ps * side / size)
                _, frame, _ = align_frames(page, Strokes(ink_mask(_analysis_size(ref.lines))))
                error = abs(frame[2] - true[2]) / true[2] + np.hypot(frame[0] - true[0], frame[1] - true[1]) / true[2]
                errors["R" if close_refs else "P"].append(float(error))
    for kind, values in errors.items():
        if values:
            v = np.array(values)
            print(json.dumps({"case": {"R": "close-up references", "P": "close-up page"}[kind], "references": len(v),
                              "within_0.15": round(float((v < 0.15).mean()), 3),
                              "within_0.3": round(float((v < 0.3).mean()), 3),
                              "median_error": round(float(np.median(v)), 3)}))


if __name__ == "__main__":
    main()
