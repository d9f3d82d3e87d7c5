"""Reference tensors for the end frame and the F1 (forward) mode, made by the upstream Python code on the tiny
random-weight FramePack of the shared fixtures (float32, CPU, injected noise).

  end frame  diffusers' HunyuanVideoFramepackPipeline.__call__ with `last_image`, sampling_type
             inverted_anti_drifting: its section order, paddings, indices, history layout and update, and the
             substitution of the end image's latent for the clean "post" latent of the first sampled section.
  F1         the `worker` function of FramePack's demo_gradio_f1.py, executed as written (its source is read
             from the file), with the tiny transformer's weights standing for the F1 transformer (the two
             checkpoints share one architecture).

Where the harness steps in, and why (each matches the conventions of the shared fixtures and this project):
  * Sampling. The diffusers pipeline runs Euler steps of its own scheduler; FramePack (and this project) run
    sample_hunyuan's UniPC with TeaCache. The pipeline is therefore called with one step, a scheduler whose
    step returns the model output, and, in the transformer's place, a callable that runs FramePack's
    sample_hunyuan (UniPC, per-section TeaCache as the worker sets it) on exactly the conditioning the pipeline
    built. The F1 worker calls sample_hunyuan itself; it is only forced to float32 on the CPU.
  * The end image's SigLIP embedding. The pipeline computes (start + end) / 2 (credited to FramePack PR #167)
    but then passes the start image's embedding to the transformer: the average is assigned to a variable the
    transformer call never reads. The harness feeds that average, as the PR and the pipeline's own line intend;
    `image_embeddings_start` / `image_embeddings_end` hold both halves.
  * Image preprocessing as FramePack's worker: bucket, resize_and_center_crop, hf_clip_vision_encode on the
    uint8 image; the VAE encode returns the posterior mean (upstream samples it).
  * Noise: torch's seeded CPU generator (one per run, shared by the sections, as the worker), each section's
    draw rounded to float16 so the fixture stores it exactly (`noise_<i>`).

usage (on a machine with torch + transformers; upstream sources never enter the repository):
  python3 scripts/references/end_frame_f1.py --upstream DIR --models DIR --inputs DIR --out DIR
    DIR of --upstream holds framepack_src/ (lllyasviel/FramePack) and diffusers_src/diffusers
    --models: the tiny models (hunyuanvideo-community/..., lllyasviel/...), --inputs: start.png and end.png
Writes <case>.safetensors per case and params.json (every case's parameters, TeaCache traces, versions).
"""
import argparse, ast, contextlib, json, os, sys, tempfile, time, traceback
from types import SimpleNamespace

ap = argparse.ArgumentParser()
ap.add_argument('--upstream', required=True)
ap.add_argument('--models', required=True)
ap.add_argument('--inputs', required=True)
ap.add_argument('--out', required=True)
args = ap.parse_args()
sys.path.insert(0, os.path.join(args.upstream, 'diffusers_src'))
sys.path.insert(0, os.path.join(args.upstream, 'framepack_src'))

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
import transformers
from transformers import AutoTokenizer, CLIPTextModel, LlamaModel, SiglipImageProcessor, SiglipVisionModel
import diffusers
from diffusers import AutoencoderKLHunyuanVideo
from diffusers_helper.bucket_tools import find_nearest_bucket
from diffusers_helper.clip_vision import hf_clip_vision_encode
from diffusers_helper.hunyuan import encode_prompt_conds
from diffusers_helper.models.hunyuan_video_packed import HunyuanVideoTransformer3DModelPacked
from diffusers_helper.pipelines import k_diffusion_hunyuan as kdh
from diffusers_helper.utils import crop_or_pad_yield_mask, resize_and_center_crop

torch.set_grad_enabled(False)
CPU = torch.device('cpu')
F32 = torch.float32
PROMPT = 'A man walking through a bustling cyberpunk market at night, rain falling.'


def load(cls, path, **kw):
    try:
        return cls.from_pretrained(path, dtype=F32, **kw).eval()
    except TypeError:
        return cls.from_pretrained(path, torch_dtype=F32, **kw).eval()


def load_models(root):
    hv = os.path.join(root, 'hunyuanvideo-community', 'HunyuanVideo')
    fr = os.path.join(root, 'lllyasviel', 'flux_redux_bfl')
    m = SimpleNamespace(
        text_encoder=load(LlamaModel, os.path.join(hv, 'text_encoder')),
        text_encoder_2=load(CLIPTextModel, os.path.join(hv, 'text_encoder_2')),
        tokenizer=AutoTokenizer.from_pretrained(os.path.join(hv, 'tokenizer')),
        tokenizer_2=AutoTokenizer.from_pretrained(os.path.join(hv, 'tokenizer_2')),
        vae=AutoencoderKLHunyuanVideo.from_pretrained(os.path.join(hv, 'vae'), torch_dtype=F32).eval(),
        feature_extractor=SiglipImageProcessor.from_pretrained(os.path.join(fr, 'feature_extractor')),
        image_encoder=load(SiglipVisionModel, os.path.join(fr, 'image_encoder')),
        transformer=HunyuanVideoTransformer3DModelPacked.from_pretrained(
            os.path.join(root, 'lllyasviel', 'FramePackI2V_HY'), torch_dtype=F32).eval(),
    )
    m.transformer.high_quality_fp32_output_for_inference = True
    # posterior mean instead of a sample, for FramePack's vae_encode and the pipeline's prepare_image_latents alike
    encode = m.vae.encode

    def encode_mean(x, *a, **k):
        out = encode(x, *a, **k)
        dist = out.latent_dist
        dist.sample = lambda generator=None: dist.mode()
        return out
    m.vae.encode = encode_mean
    return m


class Recorder:
    """What one run's sample_hunyuan calls saw and returned, its noise, and TeaCache's per-call decisions."""

    def __init__(self, transformer):
        self.calls, self.noise, self.teacache = [], [], []
        self.transformer = transformer
        init = type(transformer).initialize_teacache.__get__(transformer)  # the class's, not an earlier wrapper

        def initialize_teacache(enable_teacache=True, num_steps=25, rel_l1_thresh=0.15):
            init(enable_teacache=enable_teacache, num_steps=num_steps, rel_l1_thresh=rel_l1_thresh)
            section = []
            self.teacache.append(section)
            if enable_teacache:
                poly = transformer.teacache_rescale_func

                def rescale(rel_l1):
                    before = transformer.accumulated_rel_l1_distance
                    r = poly(rel_l1)
                    section.append({'rel_l1': float(rel_l1), 'accumulated': float(before + r)})
                    return r
                transformer.teacache_rescale_func = rescale
        transformer.initialize_teacache = initialize_teacache

    @contextlib.contextmanager
    def half_noise(self):
        """sample_hunyuan draws its noise with torch.randn from its module's `torch`: round that draw to fp16."""
        recorder = self

        class TorchProxy:
            def __getattr__(self, name):
                return getattr(torch, name)

            def randn(self, *a, **k):
                x = torch.randn(*a, **k).half().float()
                recorder.noise.append(x.clone())
                return x
        kdh.torch = TorchProxy()
        try:
            yield
        finally:
            kdh.torch = torch

    def sample_hunyuan(self, **kw):
        kw.update(dtype=F32, device=CPU)
        with self.half_noise():
            out = kdh.sample_hunyuan(**kw)
        self.calls.append({**kw, 'output': out.clone()})
        return out


def run_f1_worker(m, image, p, case_dir):
    """demo_gradio_f1.py's `worker`, compiled from the file and run with the tiny networks as its globals."""
    path = os.path.join(args.upstream, 'framepack_src', 'demo_gradio_f1.py')
    tree = ast.parse(open(path).read(), path)
    worker = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == 'worker']
    assert len(worker) == 1, 'demo_gradio_f1.py has no single worker()'
    rec = Recorder(m.transformer)
    pixels = []

    class Queue:
        def push(self, item):
            pass

        def top(self):
            return None

    def save_bcthw_as_mp4(x, output_filename, fps=10, crf=0):
        pixels.append(x)  # the video so far; the mp4 itself is not needed

    def reraise():
        raise  # the worker prints and swallows exceptions; a reference run must fail loudly

    import einops
    from diffusers_helper import hunyuan, utils
    from diffusers_helper.gradio.progress_bar import make_progress_bar_html
    ns = dict(
        torch=torch, np=np, einops=einops, os=os, Image=Image, math=__import__('math'),
        traceback=SimpleNamespace(print_exc=reraise),
        encode_prompt_conds=hunyuan.encode_prompt_conds, vae_decode=hunyuan.vae_decode, vae_encode=hunyuan.vae_encode,
        vae_decode_fake=hunyuan.vae_decode_fake, save_bcthw_as_mp4=save_bcthw_as_mp4,
        crop_or_pad_yield_mask=utils.crop_or_pad_yield_mask, soft_append_bcthw=utils.soft_append_bcthw,
        resize_and_center_crop=utils.resize_and_center_crop, generate_timestamp=utils.generate_timestamp,
        sample_hunyuan=rec.sample_hunyuan, hf_clip_vision_encode=hf_clip_vision_encode,
        find_nearest_bucket=find_nearest_bucket, make_progress_bar_html=make_progress_bar_html,
        cpu=CPU, gpu=CPU, high_vram=True, outputs_folder=case_dir,
        stream=SimpleNamespace(output_queue=Queue(), input_queue=Queue()),
        text_encoder=m.text_encoder, text_encoder_2=m.text_encoder_2, tokenizer=m.tokenizer, tokenizer_2=m.tokenizer_2,
        vae=m.vae, feature_extractor=m.feature_extractor, image_encoder=m.image_encoder, transformer=m.transformer,
    )
    exec(compile(ast.Module(body=worker, type_ignores=[]), path, 'exec'), ns)
    ns['worker'](image, PROMPT, '', p['seed'], p['total_video_length_seconds'], p['latent_window_size'], p['steps'],
                 p['cfg_scale'], p['distilled_cfg_scale'], p['cfg_rescale'], 6, p['use_teacache'], 16)
    assert pixels, 'the worker produced no video'
    return rec, pixels[-1]


class OneJump:
    """A scheduler with one timestep whose step returns the model output: the model output is the section's
    sampled latents (SectionSampler)."""
    order = 1
    config = {}

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None):
        self.timesteps = torch.tensor([1000.0])

    def step(self, model_output, t, sample, return_dict=False):
        return (model_output,)


class SectionSampler:
    """Stands where the pipeline calls its transformer: runs FramePack's sample_hunyuan over the section with the
    conditioning the pipeline built, and returns the sampled latents."""

    def __init__(self, m, rec, p, embeds):
        self.m, self.rec, self.p, self.embeds = m, rec, p, embeds
        self.dtype = F32
        self.config = SimpleNamespace(in_channels=m.transformer.config.in_channels, patch_size=m.transformer.config.patch_size)
        self.rnd = torch.Generator('cpu').manual_seed(p['seed'])
        self.seen = []

    def __call__(self, hidden_states, timestep, encoder_hidden_states, encoder_attention_mask, pooled_projections,
                 image_embeds, indices_latents, guidance, latents_clean, indices_latents_clean, latents_history_2x,
                 indices_latents_history_2x, latents_history_4x, indices_latents_history_4x, attention_kwargs=None,
                 return_dict=False):
        p = self.p
        row = lambda i: i.unsqueeze(0) if i.ndim == 1 else i
        # the pipeline's `(image_embeds + last_image_embeds) / 2`, which it computes and does not pass on
        fed = (self.embeds[0] + self.embeds[1]) / 2 if len(self.embeds) == 2 else image_embeds
        self.seen.append(dict(image_embeds=image_embeds, fed=fed, clean=latents_clean.clone()))
        self.m.transformer.initialize_teacache(enable_teacache=p['use_teacache'], num_steps=p['steps'])
        _, _, T, h, w = hidden_states.shape
        out = self.rec.sample_hunyuan(
            transformer=self.m.transformer, sampler='unipc', width=w * 8, height=h * 8, frames=T * 4 - 3,
            real_guidance_scale=p['cfg_scale'], distilled_guidance_scale=p['distilled_cfg_scale'],
            guidance_rescale=p['cfg_rescale'], num_inference_steps=p['steps'], generator=self.rnd,
            prompt_embeds=encoder_hidden_states, prompt_embeds_mask=encoder_attention_mask.bool(),
            prompt_poolers=pooled_projections, negative_prompt_embeds=torch.zeros_like(encoder_hidden_states),
            negative_prompt_embeds_mask=encoder_attention_mask.bool(), negative_prompt_poolers=torch.zeros_like(pooled_projections),
            image_embeddings=fed, latent_indices=row(indices_latents), clean_latents=latents_clean,
            clean_latent_indices=row(indices_latents_clean), clean_latents_2x=latents_history_2x,
            clean_latent_2x_indices=row(indices_latents_history_2x), clean_latents_4x=latents_history_4x,
            clean_latent_4x_indices=row(indices_latents_history_4x))
        return (out,)


def run_diffusers(m, start_np, end_np, p, sampling_type):
    """HunyuanVideoFramepackPipeline.__call__ over the tiny networks (output_type='latent')."""
    from diffusers.configuration_utils import FrozenDict
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import (
        FramepackSamplingType, HunyuanVideoFramepackPipeline)
    from diffusers.video_processor import VideoProcessor
    rec = Recorder(m.transformer)
    embeds = []

    class NoBar:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, *a):
            pass

    class Pipeline(HunyuanVideoFramepackPipeline):
        def __init__(self):  # the modules are plain attributes: no hub registration, no offload hooks
            self.__dict__.update(
                _internal_dict=FrozenDict(), vae=m.vae, scheduler=OneJump(),
                transformer=SectionSampler(m, rec, p, embeds), vae_scale_factor_temporal=4, vae_scale_factor_spatial=8,
                video_processor=VideoProcessor(vae_scale_factor=8))

        @property
        def _execution_device(self):
            return CPU

        def progress_bar(self, iterable=None, total=None):
            return NoBar()

        def maybe_free_model_hooks(self):
            pass

        def encode_image(self, image, device=None, dtype=None):
            # FramePack's SigLIP path on the uint8 image the pipeline preprocessed (exactly recoverable)
            u8 = ((image[0].permute(1, 2, 0).float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
            e = hf_clip_vision_encode(u8, m.feature_extractor, m.image_encoder).last_hidden_state
            embeds.append(e)
            return e if dtype is None else e.to(dtype=dtype)

    llama_vec, clip_pooler = encode_prompt_conds(PROMPT, m.text_encoder, m.text_encoder_2, m.tokenizer, m.tokenizer_2)
    llama_vec, llama_mask = crop_or_pad_yield_mask(llama_vec, length=512)
    H, W = start_np.shape[:2]
    lws = p['latent_window_size']
    window = (lws - 1) * 4 + 1
    pipe = Pipeline()
    kind = FramepackSamplingType(sampling_type)
    (history,) = pipe(
        image=Image.fromarray(start_np), last_image=None if end_np is None else Image.fromarray(end_np),
        prompt_embeds=llama_vec, pooled_prompt_embeds=clip_pooler, prompt_attention_mask=llama_mask,
        height=H, width=W, num_frames=p['sections'] * window, latent_window_size=lws, num_inference_steps=1,
        guidance_scale=p['distilled_cfg_scale'], sampling_type=kind, output_type='latent', return_dict=False)
    return rec, pipe.transformer.seen, embeds, history, (llama_vec, llama_mask, clip_pooler)


def stats(frames_u8):
    x = frames_u8.float()  # (T, H, W, C)
    return x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3), unbiased=False)


def common(rec, p):
    t = {}
    for i, (c, noise) in enumerate(zip(rec.calls, rec.noise)):
        t[f'noise_{i}'] = noise.half()
        for k in ('latent_indices', 'clean_latent_indices', 'clean_latent_2x_indices', 'clean_latent_4x_indices'):
            t[f'section_{i}_{k}'] = c[k].to(torch.int64)
    return t


def save(case, tensors):
    path = os.path.join(args.out, f'{case}.safetensors')
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, path)
    print(f'{case}: {len(tensors)} tensors, {os.path.getsize(path) / 1e6:.2f} MB', flush=True)


def end_frame_case(m, start, end, teacache):
    H, W = find_nearest_bucket(*start.shape[:2], resolution=640)
    start_np = resize_and_center_crop(start, target_width=W, target_height=H)
    end_np = resize_and_center_crop(end, target_width=W, target_height=H)
    p = dict(prompt=PROMPT, seed=31337, total_video_length_seconds=0.5, latent_window_size=2, steps=4, cfg_scale=1.0,
             distilled_cfg_scale=10.0, cfg_rescale=0.0, use_teacache=teacache, sections=2, bucket=[H, W],
             end_image_strength=1.0, sampling_mode='inverted')
    rec, seen, embeds, history, (llama_vec, llama_mask, clip_pooler) = run_diffusers(m, start_np, end_np, p, 'inverted_anti_drifting')
    t = common(rec, p)
    sizes = [h.shape[2] for h in history]
    for i, h in enumerate(history):  # the real history after each section; each section's chunk is its head
        t[f'section_{i}_generated_latents'] = h[:, :, :sizes[i] - (sizes[i - 1] if i else 0)]
    t.update(llama_vec=llama_vec, llama_attention_mask=llama_mask.to(torch.int64), clip_l_pooler=clip_pooler,
             start_latent=seen[0]['clean'][:, :, :1], end_latent=seen[0]['clean'][:, :, 1:2],
             image_embeddings=seen[0]['fed'], image_embeddings_start=embeds[0], image_embeddings_end=embeds[1],
             final_latents=history[-1])
    # what the pipeline itself passes to its transformer: the start image's embedding in every section
    assert all(torch.equal(s['image_embeds'], embeds[0]) for s in seen)
    p.update(latent_frames=int(history[-1].shape[2]), teacache_trace=rec.teacache,
             sampled_by='diffusers HunyuanVideoFramepackPipeline (last_image, inverted_anti_drifting) + FramePack sample_hunyuan')
    return p, t


def f1_case(m, start, teacache):
    p = dict(prompt=PROMPT, seed=31337, total_video_length_seconds=0.5, latent_window_size=2, steps=4, cfg_scale=1.0,
             distilled_cfg_scale=10.0, cfg_rescale=0.0, use_teacache=teacache, sections=2,
             bucket=list(find_nearest_bucket(*start.shape[:2], resolution=640)), sampling_mode='f1')
    with tempfile.TemporaryDirectory() as tmp:
        rec, pixels = run_f1_worker(m, start, p, tmp)
    t = common(rec, p)
    c0 = rec.calls[0]
    for i, c in enumerate(rec.calls):
        t[f'section_{i}_generated_latents'] = c['output']
    frames = (torch.clamp(pixels.float(), -1., 1.) * 127.5 + 127.5).to(torch.uint8)[0].permute(1, 2, 3, 0)
    mean, std = stats(frames)
    t.update(llama_vec=c0['prompt_embeds'], llama_attention_mask=c0['prompt_embeds_mask'].to(torch.int64),
             clip_l_pooler=c0['prompt_poolers'], start_latent=c0['clean_latents'][:, :, :1],
             image_embeddings=c0['image_embeddings'], frame_mean=mean, frame_std=std)
    p.update(frames=int(frames.shape[0]), teacache_trace=rec.teacache, sampled_by='FramePack demo_gradio_f1.py worker')
    return p, t


def vanilla_cross_check(m, start, f1_tensors):
    """diffusers' `vanilla` sampling with the same harness against the F1 worker: printed, not stored."""
    H, W = find_nearest_bucket(*start.shape[:2], resolution=640)
    start_np = resize_and_center_crop(start, target_width=W, target_height=H)
    p = dict(seed=31337, latent_window_size=2, steps=4, cfg_scale=1.0, distilled_cfg_scale=10.0, cfg_rescale=0.0,
             use_teacache=False, sections=2)
    rec, _, _, history, _ = run_diffusers(m, start_np, None, p, 'vanilla')
    for i, c in enumerate(rec.calls):
        ref = f1_tensors[f'section_{i}_generated_latents']
        d = (c['output'] - ref).norm() / ref.norm()
        print(f'cross-check: diffusers vanilla vs demo_gradio_f1 worker, section {i}: relative L2 {d:.3e}', flush=True)


def main():
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    print(f'torch {torch.__version__}, transformers {transformers.__version__}, diffusers {diffusers.__version__}', flush=True)
    m = load_models(args.models)
    start = np.array(Image.open(os.path.join(args.inputs, 'start.png')).convert('RGB'))
    end = np.array(Image.open(os.path.join(args.inputs, 'end.png')).convert('RGB'))
    summary, f1_off = {}, None
    for name, make in [
        ('end_frame', lambda: end_frame_case(m, start, end, False)),
        ('end_frame_teacache', lambda: end_frame_case(m, start, end, True)),
        ('f1', lambda: f1_case(m, start, False)),
        ('f1_teacache', lambda: f1_case(m, start, True)),
    ]:
        t = time.time()
        try:
            params, tensors = make()
            save(name, tensors)
            summary[name] = {**params, 'seconds': round(time.time() - t, 1)}
            if name == 'f1':
                f1_off = tensors
        except Exception:
            traceback.print_exc()
            summary[name] = {'error': traceback.format_exc()}
    if f1_off is not None:
        try:
            vanilla_cross_check(m, start, f1_off)
        except Exception:
            traceback.print_exc()
    summary['versions'] = {'torch': torch.__version__, 'transformers': transformers.__version__, 'diffusers': diffusers.__version__}
    json.dump(summary, open(os.path.join(args.out, 'params.json'), 'w'), indent=1)
    print(f'done in {time.time() - t0:.1f} s', flush=True)


main()
