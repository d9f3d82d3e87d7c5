#!/usr/bin/env python3
"""
LoRA references for the packed transformer, made by the upstream loaders on the fixtures' tiny FramePack.

  python3 scripts/references/lora-reference.py --upstream DIR --musubi DIR --model DIR --inputs FILE --out DIR

  --upstream  holds framepack_src/ (lllyasviel/FramePack) and diffusers_src/diffusers (huggingface/diffusers)
  --musubi    holds musubi_tuner/ (kohya-ss/musubi-tuner's src/musubi_tuner: networks/lora.py,
              networks/lora_framepack.py, convert_lora.py, utils/model_utils.py)
  --model     the tiny FramePackI2V_HY folder of the fixtures; --inputs its components/transformer.safetensors

Five LoRA files with random weights are written in the key layouts people publish, each applied to a fresh
float32 HunyuanVideoTransformer3DModelPacked (FramePack's own class) by the code that reads that layout, and
the transformer run on the fixture's inputs, on the CPU:

  diffusers_a.safetensors    diffusers/PEFT: transformer.<module>.lora_A/lora_B on every nn.Linear of the
                             model, ranks 4/2/8 mixed, stored bfloat16
  diffusers_b.safetensors    the same layout, rank 3 on every third Linear
      -> diffusers: HunyuanVideoLoraLoaderMixin.lora_state_dict, load_lora_adapter, set_adapters
         out_diffusers_a: diffusers_a at weight 1; out_diffusers_ab: diffusers_a 0.8 + diffusers_b -0.6
  hunyuan_original.safetensors  the original HunyuanVideo names (diffusion_model.double_blocks.N.img_attn_qkv,
                             single_blocks.N.linear1, txt_in..., final_layer.linear), lora_A/lora_B, float32
      -> the same diffusers path, whose lora_state_dict converts these names (fused qkv / linear1 split);
         out_hunyuan_original at weight 1.3. The converter hard-codes HunyuanVideo's width 3072 for the
         linear1 split; it is run with the tiny model's width instead (its source text, that one number
         changed). Its two places that split lora_A along the rank (the refiner's self_attn_qkv and
         final_layer.adaLN_modulation.1) are left out of the file.
  musubi_framepack.safetensors  musubi-tuner's FramePack LoRA: lora_unet_<module with _>.lora_down/lora_up +
                             .alpha on the Linears of the dual and single blocks, alphas 1/2/4/8 at rank 4,
                             stored float16
      -> musubi-tuner: lora_framepack.create_arch_network_from_weights + merge_to, multiplier 0.7
         (out_musubi_framepack)
  musubi_hunyuan.safetensors  musubi-tuner's HunyuanVideo LoRA: lora_unet_double_blocks_N_img_attn_qkv ... with
                             alphas
      -> musubi-tuner's convert_lora.convert_to_diffusers (to diffusion_model.* lora_A/lora_B, alpha folded in),
         then the diffusers path above at weight 0.9 (out_musubi_hunyuan)

plus base_output (no LoRA; must equal the fixture's output) in outputs.safetensors and a summary.json.
"""
import argparse
import inspect
import json
import os
import sys
import traceback

ap = argparse.ArgumentParser()
ap.add_argument("--upstream", required=True)
ap.add_argument("--musubi", required=True)
ap.add_argument("--model", required=True)
ap.add_argument("--inputs", required=True)
ap.add_argument("--out", required=True)
args = ap.parse_args()
sys.path.insert(0, os.path.join(args.upstream, "diffusers_src"))
sys.path.insert(0, os.path.join(args.upstream, "framepack_src"))
sys.path.insert(0, args.musubi)

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

torch.set_grad_enabled(False)
torch.manual_seed(20261205)
os.makedirs(args.out, exist_ok=True)
summary = {"versions": {"torch": torch.__version__}, "results": {}}

from diffusers_helper.models.hunyuan_video_packed import HunyuanVideoTransformer3DModelPacked  # noqa: E402
import diffusers  # noqa: E402
import diffusers.loaders.lora_conversion_utils as lcu  # noqa: E402
import diffusers.loaders.lora_pipeline as lp  # noqa: E402
from diffusers.loaders.lora_pipeline import HunyuanVideoLoraLoaderMixin  # noqa: E402

summary["versions"]["diffusers"] = diffusers.__version__
try:
    import peft
    summary["versions"]["peft"] = peft.__version__
except Exception as e:  # reported, the diffusers references then fail below
    summary["versions"]["peft"] = f"missing: {e}"

inputs = load_file(args.inputs)
feeds = {k: inputs[k] for k in [
    "hidden_states", "timestep", "encoder_hidden_states", "encoder_attention_mask", "pooled_projections", "guidance",
    "latent_indices", "clean_latents", "clean_latent_indices", "clean_latents_2x", "clean_latent_2x_indices",
    "clean_latents_4x", "clean_latent_4x_indices", "image_embeddings"]}


def fresh():
    m = HunyuanVideoTransformer3DModelPacked.from_pretrained(args.model, torch_dtype=torch.float32).eval()
    return m


def forward(m):
    return m(**feeds, return_dict=False)[0].float().contiguous()


def rel(a, b):
    return float((a - b).norm() / b.norm())


base_model = fresh()
D = base_model.config.num_attention_heads * base_model.config.attention_head_dim
linears = {n: mod for n, mod in base_model.named_modules() if isinstance(mod, torch.nn.Linear)}
outputs = {"base_output": forward(base_model)}
summary["base_vs_fixture"] = rel(outputs["base_output"], inputs["output"])
summary["linears"] = sorted(linears)


def lora_pair(out_f, in_f, r, wstd):
    """A (r, in), B (out, r) whose product perturbs a weight of std `wstd` by about 30 %."""
    a = torch.randn(r, in_f) / in_f ** 0.5
    b = torch.randn(out_f, r) * (0.3 * wstd * in_f ** 0.5 / r ** 0.5)
    return a, b


def wstd(name):
    return float(linears[name].weight.std())


# ---- layout A: diffusers / PEFT
def diffusers_file(path, names, ranks, dtype):
    sd = {}
    for i, n in enumerate(names):
        w = linears[n].weight
        a, b = lora_pair(w.shape[0], w.shape[1], ranks[i % len(ranks)], wstd(n))
        sd[f"transformer.{n}.lora_A.weight"] = a.to(dtype)
        sd[f"transformer.{n}.lora_B.weight"] = b.to(dtype)
    save_file(sd, path)


names = sorted(linears)
diffusers_file(os.path.join(args.out, "diffusers_a.safetensors"), names, [4, 2, 8], torch.bfloat16)
diffusers_file(os.path.join(args.out, "diffusers_b.safetensors"), names[::3], [3], torch.float32)


def with_diffusers(files_weights):
    m = fresh()
    adapters = []
    for i, (file, _) in enumerate(files_weights):
        sd, metadata = HunyuanVideoLoraLoaderMixin.lora_state_dict(args.out, weight_name=file, return_lora_metadata=True)
        m.load_lora_adapter(sd, prefix="transformer", adapter_name=f"l{i}", metadata=metadata)
        adapters.append(f"l{i}")
    m.set_adapters(adapters, [w for _, w in files_weights])
    return forward(m)


def run(name, fn):
    try:
        outputs[name] = fn()
        summary["results"][name] = {"ok": True, "vs_base": rel(outputs[name], outputs["base_output"])}
    except Exception:
        summary["results"][name] = {"ok": False, "error": traceback.format_exc()[-3000:]}


run("out_diffusers_a", lambda: with_diffusers([("diffusers_a.safetensors", 1.0)]))
run("out_diffusers_ab", lambda: with_diffusers([("diffusers_a.safetensors", 0.8), ("diffusers_b.safetensors", -0.6)]))

# ---- layout B: original HunyuanVideo names, converted by diffusers
src = inspect.getsource(lcu._convert_hunyuan_video_lora_to_diffusers)
assert src.count("hidden_size = 3072") == 1, "the converter's hard-coded width moved"
exec(compile(src.replace("hidden_size = 3072", f"hidden_size = {D}"), "lora_conversion_utils(tiny width)", "exec"), lcu.__dict__)
lp._convert_hunyuan_video_lora_to_diffusers = lcu._convert_hunyuan_video_lora_to_diffusers

F = linears["single_transformer_blocks.0.proj_mlp"].weight.shape[0]
original = {}  # original name -> (out, in, reference module for the weight scale)
for i in range(base_model.config.num_layers):
    t = f"transformer_blocks.{i}"
    original.update({
        f"double_blocks.{i}.img_attn_qkv": (3 * D, D, f"{t}.attn.to_q"),
        f"double_blocks.{i}.txt_attn_qkv": (3 * D, D, f"{t}.attn.add_q_proj"),
        f"double_blocks.{i}.img_attn_proj": (D, D, f"{t}.attn.to_out.0"),
        f"double_blocks.{i}.txt_attn_proj": (D, D, f"{t}.attn.to_add_out"),
        f"double_blocks.{i}.img_mlp.fc1": (F, D, f"{t}.ff.net.0.proj"),
        f"double_blocks.{i}.img_mlp.fc2": (D, F, f"{t}.ff.net.2"),
        f"double_blocks.{i}.txt_mlp.fc1": (F, D, f"{t}.ff_context.net.0.proj"),
        f"double_blocks.{i}.txt_mlp.fc2": (D, F, f"{t}.ff_context.net.2"),
        f"double_blocks.{i}.img_mod.linear": (6 * D, D, f"{t}.norm1.linear"),
        f"double_blocks.{i}.txt_mod.linear": (6 * D, D, f"{t}.norm1_context.linear"),
    })
for i in range(base_model.config.num_single_layers):
    s = f"single_transformer_blocks.{i}"
    original.update({
        f"single_blocks.{i}.linear1": (3 * D + F, D, f"{s}.attn.to_q"),
        f"single_blocks.{i}.linear2": (D, D + F, f"{s}.proj_out"),
        f"single_blocks.{i}.modulation.linear": (3 * D, D, f"{s}.norm.linear"),
    })
T = base_model.config.text_embed_dim
refiner = "context_embedder.token_refiner.refiner_blocks.0"
original.update({
    "txt_in.input_embedder": (D, T, "context_embedder.proj_in"),
    "txt_in.t_embedder.mlp.0": (D, 256, "context_embedder.time_text_embed.timestep_embedder.linear_1"),
    "txt_in.t_embedder.mlp.2": (D, D, "context_embedder.time_text_embed.timestep_embedder.linear_2"),
    "txt_in.c_embedder.linear_1": (D, T, "context_embedder.time_text_embed.text_embedder.linear_1"),
    "txt_in.c_embedder.linear_2": (D, D, "context_embedder.time_text_embed.text_embedder.linear_2"),
    "txt_in.individual_token_refiner.blocks.0.self_attn_proj": (D, D, f"{refiner}.attn.to_out.0"),
    "txt_in.individual_token_refiner.blocks.0.mlp.fc1": (4 * D, D, f"{refiner}.ff.net.0.proj"),
    "txt_in.individual_token_refiner.blocks.0.mlp.fc2": (D, 4 * D, f"{refiner}.ff.net.2"),
    "txt_in.individual_token_refiner.blocks.0.adaLN_modulation.1": (2 * D, D, f"{refiner}.norm_out.linear"),
    "time_in.mlp.0": (D, 256, "time_text_embed.timestep_embedder.linear_1"),
    "time_in.mlp.2": (D, D, "time_text_embed.timestep_embedder.linear_2"),
    "guidance_in.mlp.0": (D, 256, "time_text_embed.guidance_embedder.linear_1"),
    "guidance_in.mlp.2": (D, D, "time_text_embed.guidance_embedder.linear_2"),
    "vector_in.in_layer": (D, base_model.config.pooled_projection_dim, "time_text_embed.text_embedder.linear_1"),
    "vector_in.out_layer": (D, D, "time_text_embed.text_embedder.linear_2"),
    "final_layer.linear": (linears["proj_out"].weight.shape[0], D, "proj_out"),
})
sd = {}
for i, (n, (o, k, ref)) in enumerate(sorted(original.items())):
    a, b = lora_pair(o, k, [4, 2][i % 2], wstd(ref))
    sd[f"diffusion_model.{n}.lora_A.weight"] = a
    sd[f"diffusion_model.{n}.lora_B.weight"] = b
save_file(sd, os.path.join(args.out, "hunyuan_original.safetensors"))
run("out_hunyuan_original", lambda: with_diffusers([("hunyuan_original.safetensors", 1.3)]))

# ---- layout C: musubi-tuner (kohya) lora_unet_* with alphas
from musubi_tuner.networks import lora_framepack  # noqa: E402
from musubi_tuner import convert_lora  # noqa: E402

block_linears = [n for n in names if n.startswith(("transformer_blocks.", "single_transformer_blocks."))]
sd = {}
for i, n in enumerate(block_linears):
    w = linears[n].weight
    a, b = lora_pair(w.shape[0], w.shape[1], 4, wstd(n))
    key = "lora_unet_" + n.replace(".", "_")
    sd[f"{key}.lora_down.weight"] = a.half()
    sd[f"{key}.lora_up.weight"] = b.half()
    sd[f"{key}.alpha"] = torch.tensor([1.0, 2.0, 4.0, 8.0][i % 4])
save_file(sd, os.path.join(args.out, "musubi_framepack.safetensors"))


def with_musubi(multiplier):
    m = fresh()
    weights = load_file(os.path.join(args.out, "musubi_framepack.safetensors"))
    network = lora_framepack.create_arch_network_from_weights(multiplier, weights, unet=m, for_inference=True)
    network.merge_to(None, m, weights, dtype=torch.float32, device="cpu")
    summary["musubi_framepack_modules"] = len(network.unet_loras)
    return forward(m)


run("out_musubi_framepack", lambda: with_musubi(0.7))

sd = {}
for i, (n, (o, k, ref)) in enumerate(sorted(x for x in original.items() if x[0].startswith(("double_blocks.", "single_blocks.")))):
    a, b = lora_pair(o, k, 4, wstd(ref))
    key = "lora_unet_" + n.replace(".", "_")
    sd[f"{key}.lora_down.weight"] = a
    sd[f"{key}.lora_up.weight"] = b
    sd[f"{key}.alpha"] = torch.tensor([2.0, 8.0, 4.0][i % 3])
save_file(sd, os.path.join(args.out, "musubi_hunyuan.safetensors"))


def with_musubi_hunyuan(weight):
    converted = convert_lora.convert_to_diffusers("lora_unet_", "diffusion_model", load_file(os.path.join(args.out, "musubi_hunyuan.safetensors")))
    save_file(converted, os.path.join(args.out, "musubi_hunyuan_converted.safetensors"))
    try:
        return with_diffusers([("musubi_hunyuan_converted.safetensors", weight)])
    finally:
        os.remove(os.path.join(args.out, "musubi_hunyuan_converted.safetensors"))


run("out_musubi_hunyuan", lambda: with_musubi_hunyuan(0.9))

save_file(outputs, os.path.join(args.out, "outputs.safetensors"))
with open(os.path.join(args.out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
print(json.dumps({k: v for k, v in summary.items() if k != "linears"}, indent=1))
