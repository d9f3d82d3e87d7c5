#!/usr/bin/env python3
"""
Reference bucket tables for every resolution class, made by the upstream code that generalises FramePack's
640 table.

  python3 scripts/references/buckets.py <FramePack checkout> <ComfyUI-FramePackWrapper checkout> \
      [<FramePack-Studio checkout>] > test/fixtures/buckets/buckets.json

- FramePack (lllyasviel) diffusers_helper/bucket_tools.py: the 640 table and find_nearest_bucket (aspect
  metric |h bw - w bh|, `<=` so the later bucket wins ties).
- kijai's ComfyUI-FramePackWrapper diffusers_helper/bucket_tools.py: the same table and metric, then for a
  resolution other than 640 the chosen bucket's sides scaled by resolution / 640 and rounded to multiples of
  16 (Python's round). FramePack-Studio's bucket_tools.py instead holds hand-written tables for 128..768 in
  steps of 128 (its 640 table adds a 640x640 bucket and it picks by aspect-ratio difference, strict `<`), so no
  rule can be taken from it; its tables are recorded here for comparison.

Each class's table is kijai's function applied to each 640 bucket's own size (an exact aspect match, so the
set's iteration order, which decides kijai's ties, plays no part). The choices for a list of image sizes come
from FramePack's function on the 640 table (the order that decides ties), then kijai's scaling.
"""
import contextlib
import importlib.util
import io
import json
import os
import sys

if len(sys.argv) not in (3, 4):
    sys.exit(__doc__)


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


framepack = load(os.path.join(sys.argv[1], "diffusers_helper", "bucket_tools.py"), "framepack_buckets")
kijai = load(os.path.join(sys.argv[2], "diffusers_helper", "bucket_tools.py"), "kijai_buckets")


def kijai_bucket(h, w, r):
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the scaled size
        return tuple(kijai.find_nearest_bucket(h, w, resolution=r))


CLASSES = list(range(320, 961, 32))
SIZES = [(640, 640), (1080, 1920), (1920, 1080), (100, 1000), (1000, 100), (480, 640), (640, 480), (912, 960), (300, 420),
         (768, 512), (512, 768), (1024, 1024), (720, 1280), (1, 1), (333, 777), (777, 333), (608, 640), (640, 608)]

out = {
    "source": "FramePack bucket_tools.py (640 table, find_nearest_bucket) and kijai ComfyUI-FramePackWrapper "
              "bucket_tools.py (scaling to other resolutions), run by scripts/references/buckets.py",
    "table_640": [list(b) for b in framepack.bucket_options[640]],
    "tables": {str(r): [list(kijai_bucket(h, w, r)) for h, w in framepack.bucket_options[640]] for r in CLASSES},
    "choices": [],
}
for h, w in SIZES:
    chosen = framepack.find_nearest_bucket(h, w, resolution=640)
    row = {"height": h, "width": w, "bucket_640": list(chosen), "by_class": {}}
    for r in CLASSES:
        scaled = chosen if r == 640 else (round(chosen[0] * (r / 640.0) / 16) * 16, round(chosen[1] * (r / 640.0) / 16) * 16)
        # kijai's own scaling of this bucket (the same code path as its find_nearest_bucket, given the bucket's size)
        assert kijai_bucket(*chosen, r) == tuple(scaled)
        row["by_class"][str(r)] = list(scaled)
    out["choices"].append(row)
if len(sys.argv) == 4:
    studio = load(os.path.join(sys.argv[3], "diffusers_helper", "bucket_tools.py"), "studio_buckets")
    out["studio_tables_for_comparison"] = {str(k): [list(b) for b in v] for k, v in studio.bucket_options.items()}
json.dump(out, sys.stdout, indent=1)
sys.stdout.write("\n")
