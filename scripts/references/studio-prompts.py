#!/usr/bin/env python3
"""
Reference results of FramePack-Studio's timestamped prompts, made by Studio's own code.

  python3 scripts/references/studio-prompts.py <FramePack-Studio checkout> > test/fixtures/timed-prompts/studio.json

What runs, unmodified:
  - modules/prompt_handler.py: parse_timestamped_prompt (timestamp syntax, snapping, reversal for the
    inverted sampler);
  - the per-section prompt choice and blending of modules/pipelines/worker.py: the worker cannot be imported
    without torch and a GPU, so the two blocks that decide prompts are cut out of its source text (between
    their own comments, located by text; the script stops if they moved) and executed as they are, with the
    variables the worker loop would hold: the parsed sections, the section index, the latent frames
    generated so far (lws per section; the inverted sampler adds the start latent only after its last
    section) and blend_sections.

Two results per case and blend setting:
  per_section             the worker as it is: its blend compares the section counter with each prompt's
                          position in the parsed list ("prompt_change_indices");
  per_section_at_changes  the same blend block fed with the sections where the chosen prompt changes, which
                          is what its comment ("start_section_idx") describes. This project follows this one.

Nothing of Studio is copied into this repository; only its results are.
"""
import json
import os
import sys
import textwrap

CASES = [
    # name, prompt, seconds, latent window size, expected by this project: "ok" or "malformed"
    ("plain", "a cat sits on a windowsill", 3.0, 9, "ok"),
    ("plain_with_brackets", "a [red] balloon floats away", 3.0, 9, "ok"),
    ("two_tags", "[0s: a cat sits] [2s: the cat jumps]", 5.0, 9, "ok"),
    ("three_tags", "[0s: The person waves hello] [2s: The person jumps up and down] [4s: The person does a spin]", 6.0, 9, "ok"),
    ("section_aligned", "[0s: Person gives thumbs up] [1.1s: Person smiles and winks] [2.2s: Person shows two thumbs down]", 3.0, 9, "ok"),
    ("with_range", "[0s: Person looks surprised] [1.1s: Person raises arms above head] [2.2s-3.3s: Person puts hands on hips]", 4.0, 9, "ok"),
    ("ranges", "[0s-1s: a dog sleeps] [1s-3s: the dog wakes up]", 3.0, 9, "ok"),
    ("late_start", "[1s: the sun rises] [3s: birds fly]", 5.0, 9, "ok"),
    ("colon_spacing", "[0s:no space after the colon] [2.5s :a space before it]", 5.0, 9, "ok"),
    ("single_tag", "[0s: a boat drifts]", 4.0, 9, "ok"),
    ("small_window", "[0s: rain] [2s: snow] [5s: sun] [8s: night]", 10.0, 5, "ok"),
    ("dense", "[0s: red] [0.5s: green] [1s: blue]", 2.0, 9, "ok"),
    ("repeated_prompt", "[0s: walk] [2s: run] [4s: walk]", 6.0, 9, "ok"),
    ("long_video", "[0s: a flower closed] [3s: it opens] [6s: a bee lands] [9s: the bee leaves]", 10.0, 9, "ok"),
    ("tight_window", "[0s: one] [1s: two] [2s: three]", 3.0, 3, "ok"),
    ("unordered", "[4s: third] [0s: first] [2s: second]", 6.0, 9, "ok"),
    # malformed: Studio accepts them silently; this project answers 422
    ("broken_range", "[0s: a cat] [2s- : jumps]", 5.0, 9, "malformed"),
    ("space_before_unit", "[0 s: a cat] [2s: it jumps]", 5.0, 9, "malformed"),
    ("no_unit", "[0: a cat] [2: it jumps]", 5.0, 9, "malformed"),
    ("text_outside", "a cat in a garden [0s: it sits] [2s: it jumps]", 5.0, 9, "malformed"),
    ("empty_text", "[0s: a cat sits] [2s: ]", 5.0, 9, "malformed"),
    ("duplicate_start", "[0s: a cat] [0s: a dog]", 5.0, 9, "malformed"),
    ("end_before_start", "[3s-1s: a cat]", 5.0, 9, "malformed"),
    ("after_the_end", "[0s: a cat] [10s: a dog]", 3.0, 9, "malformed"),
    ("nested", "[0s: a [red] cat] [2s: it jumps]", 5.0, 9, "malformed"),
    ("unclosed", "[0s: a cat sits [2s: it jumps]", 5.0, 9, "malformed"),
    ("minutes", "[0s: a cat] [1m: a dog]", 5.0, 9, "malformed"),
    ("newline_inside", "[0s: a cat\nsits] [2s: it jumps]", 5.0, 9, "malformed"),
]
BLENDS = [0, 1, 4]  # Studio's slider goes 0..10, default 4
TYPES = ["Original", "F1"]


def cut(source, start_marker, end_marker):
    """The worker's lines from the line holding start_marker up to (not including) the one holding end_marker."""
    lines = source.splitlines()
    starts = [i for i, l in enumerate(lines) if start_marker in l]
    if len(starts) != 1:
        sys.exit(f"worker.py: expected one line with {start_marker!r}, found {len(starts)}")
    s = starts[0]
    ends = [i for i in range(s + 1, len(lines)) if end_marker in lines[i]]
    if not ends:
        sys.exit(f"worker.py: no {end_marker!r} after {start_marker!r}")
    return textwrap.dedent("\n".join(lines[s:ends[0]]))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    studio = os.path.abspath(sys.argv[1])
    sys.path.insert(0, studio)
    from modules.prompt_handler import parse_timestamped_prompt  # noqa: E402
    from modules.version import APP_VERSION  # noqa: E402

    worker = open(os.path.join(studio, "modules", "pipelines", "worker.py"), encoding="utf-8").read()
    change_indices = compile(cut(worker, "# PROMPT BLENDING: Build a list of (start_section_idx", "# Encode negative prompt"), "worker-change-indices", "exec")
    choose = compile(cut(worker, "# Calculate the current time position", "# Get the encoded prompt for this section"), "worker-choose", "exec")

    out = {
        "source": "FramePack-Studio " + APP_VERSION + ": modules/prompt_handler.py parse_timestamped_prompt and the prompt "
                  "choice / blending blocks of modules/pipelines/worker.py, run by scripts/references/studio-prompts.py",
        "blend_sections": BLENDS,
        "cases": [],
    }
    for name, prompt, seconds, lws, expect in CASES:
        sections_count = int(max(round((seconds * 30) / (lws * 4)), 1))
        case = {"name": name, "prompt": prompt, "seconds": seconds, "latent_window_size": lws,
                "expect": expect, "sections": sections_count, "by_type": {}}
        for model_type in TYPES:
            parsed = parse_timestamped_prompt(prompt, seconds, lws, model_type)
            env = {"prompt_sections": parsed}
            exec(change_indices, env)
            listed = env["prompt_change_indices"]

            def run(change_indices):
                per_blend = {}
                for blend in BLENDS:
                    # the worker loop: F1 starts with the start latent in its history, the inverted one with nothing
                    generated = 1 if model_type == "F1" else 0
                    rows = []
                    for section_idx in range(sections_count):
                        env.update(model_type=model_type, total_generated_latent_frames=generated, section_idx=section_idx,
                                   blend_sections=blend, prompt_change_indices=change_indices, print=lambda *a, **k: None)
                        exec(choose, env)
                        blended = env["blend_alpha"] is not None and env["prev_prompt"] != env["next_prompt"]
                        rows.append({
                            "time_position": env["current_time_position"],
                            "prompt": env["current_prompt"],
                            "blend": {"from": env["prev_prompt"], "to": env["next_prompt"], "alpha": env["blend_alpha"]} if blended else None,
                        })
                        generated += lws
                    per_blend[str(blend)] = rows
                return per_blend

            as_is = run(listed)
            chosen = [r["prompt"] for r in as_is["0"]]
            at_changes = [[k, p] for k, p in enumerate(chosen) if k == 0 or p != chosen[k - 1]]
            case["by_type"][model_type] = {
                "parsed": [{"prompt": s.prompt, "start": s.start_time, "end": s.end_time} for s in parsed],
                "prompt_change_indices": [[i, p] for i, p in listed],
                "per_section": as_is,
                "section_change_indices": at_changes,
                "per_section_at_changes": run([tuple(c) for c in at_changes]),
            }
        out["cases"].append(case)
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
