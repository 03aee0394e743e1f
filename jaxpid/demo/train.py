"""Train the demo model: a tiny pixel-space Stable-Diffusion-family model on the shapes world.

    python -m jaxpid.demo.train --out DIR [--steps N] [--resume] [--stop-at S]

writes a diffusers-format pipeline folder to DIR (model_index.json, unet/, text_encoder/,
tokenizer/, scheduler/, training.json; no VAE: the UNet works on 3-channel pixels), which
``jaxpid.load_pipeline`` and diffusers both read. The shipped model in ``jaxpid/data/demo`` was
made by this command with its defaults.

- Model: ``UNet2DConditionModel`` (3 levels, cross-attention at the two lower ones) and a CLIP
  text encoder trained jointly from scratch; the CLIP BPE tokenizer of
  :func:`jaxpid.sd.tokenizer.tokenizer_files_for_words` with the dataset's vocabulary (each word one
  token), padded with the end token as SD 1.x, to 32 tokens (``model_max_length``) rather than
  77: the grammar's captions need at most 11.
- Objective: v-prediction (v = sqrt(ᾱ)·ε − sqrt(1 − ᾱ)·x, as SD 2.x) with the MSE loss at
  uniformly random timesteps of SD's 1000-step scaled-linear β schedule (log-SNR from 7.1 down
  to −5.4, the range the estimator's default log-SNR proposal covers). Why not ε: in pixel space
  with this little training, an ε-model's x̂0 = (z − sqrt(1 − ᾱ)·ε̂)/sqrt(ᾱ) at low SNR
  amplifies small ε errors into noise (checked: after 500 steps its DDIM samples were pure
  noise although its ε-loss was low), while a v-model predicts ≈ −x there directly. The
  v-loss is the ε-loss weighted by 1/ᾱ_t; the pipeline's denoiser converts v̂ to ε̂ for the
  estimator.
- Captions are corrupted as :func:`jaxpid.demo.dataset.corrupt_caption` says (10 % empty,
  40 % a random subset of words, each kept with 0.8), so the empty prompt and deleted-word
  prompts are conditions the model was trained on; a batch holds exactly those shares
  (:func:`jaxpid.demo.dataset.corrupt_batch`, batches of a multiple of 10).
- A corrupted caption's target is the model's own prediction from the full caption at the same
  noisy image (no gradient), not the drawn noise: the full caption given the image and the
  corrupted text is a draw from its posterior, so the optimum is the same denoiser, with a target
  whose variance is only what the full caption leaves open. Those examples' timesteps are
  uniform in log-SNR (the measure an information integrates over) rather than in t. These
  changes (and the corruption's 0.8) came from measuring why the first shipped model read 3-10x
  its world's informations (docs/validation.md#training-changes-and-the-retrained-model).
- The weights shipped are an exponential moving average of the trained ones.
- Reproducible: batch ``s`` is drawn from ``numpy.random.default_rng([seed, s])`` and the noise
  from ``fold_in(key(seed + 1), s)``, so a run resumed from a checkpoint continues exactly as an
  uninterrupted one. Checkpoints (safetensors + json, never pickle) are written atomically
  every ``--checkpoint-every`` steps to ``--checkpoints`` (default: ``DIR`` + ``-checkpoints``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from safetensors.numpy import load_file, save

from jaxpid.demo import dataset
from jaxpid.io.atomic import remove_folder, write_files, write_folder
from jaxpid.sd.models import clip, unet
from jaxpid.sd.models.convert import flax_to_state_dict
from jaxpid.sd.schedule import NoiseSchedule
from jaxpid.sd.tokenizer import load_tokenizer, tokenizer_files_for_words

TEXT_DIM = 64
CHANNELS = (16, 32, 64)
# Captions of the grammar take at most 11 tokens; 32 leaves room for free-form prompts and costs
# the text encoder and cross-attention 2.4x less than CLIP's usual 77.
MAX_LENGTH = 32


# ---------------------------------------------------------------------------------- configs


def unet_config(size: int = dataset.IMAGE_SIZE, channels: Sequence[int] = CHANNELS) -> dict:
    """The diffusers ``unet/config.json``: pixel space, cross-attention below full resolution."""
    return {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.30.0",
        "sample_size": size,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": list(channels),
        "layers_per_block": 1,
        # Full-resolution self-attention would cost more than the rest of the UNet on a CPU;
        # at 20 px the 10x10 and 5x5 levels see the objects well enough.
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "cross_attention_dim": TEXT_DIM,
        "attention_head_dim": 4,  # the number of heads, in diffusers' SD 1.x naming
        "norm_num_groups": 8,
        "norm_eps": 1e-5,
        "use_linear_projection": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "act_fn": "silu",
        "center_input_sample": False,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
    }


def text_encoder_config(vocab: dict[str, int]) -> dict:
    """The transformers ``text_encoder/config.json`` of the tiny CLIP text model."""
    return {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": len(vocab),
        "hidden_size": TEXT_DIM,
        "intermediate_size": 4 * TEXT_DIM,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": MAX_LENGTH,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": TEXT_DIM,
        "pad_token_id": vocab["<|endoftext|>"],
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
    }


def scheduler_config() -> dict:
    """DDIM with SD's betas and v-prediction (see the module docstring for why)."""
    return {
        "_class_name": "DDIMScheduler",
        "_diffusers_version": "0.30.0",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "v_prediction",
        # Off, as in SD: diffusers' DDIM clips x̂0 but keeps the unclipped ε̂, and with guidance
        # that mismatch turned the demo's red circles green (checked at guidance 2 to 4).
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "thresholding": False,
    }


MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.30.0",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": [None, None],
}


# ---------------------------------------------------------------------------------- training


@flax.struct.dataclass
class Models:
    """The two modules (static) of the model being trained."""

    unet: Any = flax.struct.field(pytree_node=False)
    text_encoder: Any = flax.struct.field(pytree_node=False)


def make_optimizer(steps: int, learning_rate: float, warmup: int) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, min(warmup, max(1, steps - 1)), max(steps, warmup + 1), end_value=0.1 * learning_rate
    )
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule, b1=0.9, b2=0.99))


def logsnr_uniform_weights(alphas_cumprod: np.ndarray) -> np.ndarray:
    """p(t) over the training steps that makes log-SNR uniform over the steps' range: each step
    gets the log-SNR interval half-way to its neighbours."""
    logsnr = np.log(alphas_cumprod) - np.log1p(-alphas_cumprod)
    edges = np.concatenate([[logsnr[0]], (logsnr[1:] + logsnr[:-1]) / 2, [logsnr[-1]]])
    widths = edges[:-1] - edges[1:]
    return widths / widths.sum()


def make_train_step(
    models: Models, optimizer: optax.GradientTransformation, alphas_cumprod: np.ndarray, ema_decay: float
):
    alphas = jnp.asarray(alphas_cumprod, jnp.float32)
    logits_uniform_logsnr = jnp.log(jnp.asarray(logsnr_uniform_weights(alphas_cumprod), jnp.float32))

    def loss_fn(params, pixels, ids, full_ids, key):
        t_key, noise_key = jax.random.split(key)
        def encode(tokens):
            return models.text_encoder.apply({"params": params["text_encoder"]}, tokens)

        # The corrupted first k draw t uniformly in log-SNR, the rest uniformly in t (as SD). An
        # information is an integral over log-SNR of the gaps between predictions, so that is the
        # measure their agreement should be trained under; uniform in t leaves log-SNR > 3 (where
        # the first shipped model's integrand was largest) only ~5 % of the steps.
        k = full_ids.shape[0]
        t_key, logsnr_key = jax.random.split(t_key)
        t = jnp.concatenate([
            jax.random.categorical(logsnr_key, logits_uniform_logsnr, shape=(k,)),
            jax.random.randint(t_key, (pixels.shape[0] - k,), 0, alphas.shape[0]),
        ])
        noise = jax.random.normal(noise_key, pixels.shape)
        a = alphas[t][:, None, None, None]
        z = jnp.sqrt(a) * pixels + jnp.sqrt(1.0 - a) * noise
        velocity = jnp.sqrt(a) * noise - jnp.sqrt(1.0 - a) * pixels
        prediction = models.unet.apply({"params": params["unet"]}, z, t, encode(ids))
        # The first k examples were shown a corrupted caption c of their caption F. Their target
        # is the model's own prediction from F at the same z (no gradient), not the noise: since
        # F given (z, c) is drawn from its posterior, E[v(z, F) | z, c] = E[v | z, c], so the
        # optimum is unchanged, but the target's variance drops to what F leaves open. Without
        # it the context-only predictions disagreed with the full ones at high log-SNR, where the
        # image settles F (docs/validation.md#why-the-demo-reads-high).
        full_prediction = models.unet.apply({"params": params["unet"]}, z[:k], t[:k], encode(full_ids))
        shown_in_full = jnp.all(ids[:k] == full_ids, axis=-1)[:, None, None, None]
        corrupted_target = jnp.where(shown_in_full, velocity[:k], jax.lax.stop_gradient(full_prediction))
        target = jnp.concatenate([corrupted_target, velocity[k:]])
        return jnp.mean((prediction - target) ** 2)

    @jax.jit
    def train_step(state, pixels, ids, full_ids, key):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], pixels, ids, full_ids, key)
        updates, opt_state = optimizer.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        step = state["step"] + 1
        decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema"], params)
        return {"params": params, "ema": ema, "opt": opt_state, "step": step}, loss

    return train_step


class Batches:
    """Batch ``s`` of the run, a pure function of (seed, s): pixels (B,3,H,W) in [-1,1], the
    shown captions' ids (B,L) and the full captions' ids of the corrupted first k (k,L)."""

    def __init__(self, tokenizer, seed: int, batch: int, size: int):
        self.tokenizer, self.seed, self.batch, self.size = tokenizer, seed, batch, size
        self.corrupted = sum(dataset.corruption_counts(batch))
        self._ids: dict[str, np.ndarray] = {}

    def _encode(self, captions: list[str]) -> np.ndarray:
        missing = [c for c in dict.fromkeys(captions) if c not in self._ids]
        if missing:
            self._ids.update(zip(missing, self.tokenizer.encode(missing)))
        return np.stack([self._ids[c] for c in captions])

    def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        images, captions = dataset.sample_batch(rng, self.batch, self.size)
        shown = dataset.corrupt_batch(captions, rng)
        pixels = np.transpose(2.0 * images - 1.0, (0, 3, 1, 2)).astype(np.float32)
        return pixels, self._encode(shown), self._encode(list(captions[: self.corrupted]))


# ---------------------------------------------------------------------------------- checkpoints


def _flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(jax.device_get(leaf)) for path, leaf in leaves}


def _unflat(flat: dict[str, np.ndarray], like):
    paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    leaves = []
    for path, leaf in paths:
        name = jax.tree_util.keystr(path)
        if name not in flat or flat[name].shape != np.shape(leaf):
            raise ValueError(f"checkpoint tensor {name} is missing or has the wrong shape")
        leaves.append(jnp.asarray(flat[name], dtype=jnp.asarray(leaf).dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def save_checkpoint(folder: Path, state, meta: dict, keep: int = 2) -> Path:
    """Write ``ckpt-<step>`` atomically (a folder staged and renamed), keep the newest ``keep``."""
    step = int(state["step"])
    final = write_folder(folder / f"ckpt-{step:07d}", {
        "state.safetensors": save(_flat(state)),
        "meta.json": json.dumps({**meta, "step": step}, indent=2),
    })
    for old in sorted(folder.glob("ckpt-*"))[:-keep]:
        remove_folder(old)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("ckpt-*")) if folder.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: Path, like) -> tuple[Any, dict]:
    meta = json.loads((path / "meta.json").read_text())
    return _unflat(load_file(str(path / "state.safetensors")), like), meta


# ---------------------------------------------------------------------------------- output


def _json(value: dict) -> str:
    return json.dumps(value, indent=2) + "\n"


def write_pipeline(out: Path, tokenizer: dict[str, str], configs: dict, params: dict, training: dict) -> Path:
    """Write the diffusers pipeline folder atomically (staged beside ``out``, then renamed)."""
    text_state = {f"text_model.{k}": v for k, v in flax_to_state_dict(params["text_encoder"]).items()}
    files = {
        **{f"tokenizer/{name}": text for name, text in tokenizer.items()},
        "model_index.json": _json(MODEL_INDEX),
        "scheduler/scheduler_config.json": _json(configs["scheduler"]),
        "unet/config.json": _json(configs["unet"]),
        "unet/diffusion_pytorch_model.safetensors": save(flax_to_state_dict(params["unet"])),
        "text_encoder/config.json": _json(configs["text_encoder"]),
        "text_encoder/model.safetensors": save(text_state),
        "training.json": _json(training),
    }
    return write_folder(out.resolve(), files)


# ---------------------------------------------------------------------------------- main


def train(
    out: Path,
    steps: int = 16000,
    *,
    resume: bool = False,
    seed: int = 0,
    batch: int = 40,
    learning_rate: float = 1e-3,
    warmup: int = 200,
    ema_decay: float = 0.999,
    channels: Sequence[int] = CHANNELS,
    size: int = dataset.IMAGE_SIZE,
    checkpoints: Path | None = None,
    checkpoint_every: int = 250,
    log_every: int = 50,
    stop_at: int | None = None,
) -> dict | None:
    """Train (or resume) and write the pipeline folder to ``out``; returns its training record.

    ``stop_at``: checkpoint and return None at that step (to fit a time limit); a later call
    with ``resume=True`` continues exactly where it stopped.
    """
    out = Path(out)
    checkpoints = Path(checkpoints) if checkpoints else out.with_name(out.name + "-checkpoints")
    found = latest_checkpoint(checkpoints)
    if found is not None and not resume:
        raise SystemExit(f"{checkpoints} holds checkpoints ({found.name}); pass --resume to continue, or remove it")

    tokenizer_dir = checkpoints / "tokenizer"
    tokenizer_files = tokenizer_files_for_words(dataset.VOCABULARY, model_max_length=MAX_LENGTH)
    write_files(tokenizer_dir, tokenizer_files)
    vocab = json.loads(tokenizer_files["vocab.json"])
    configs = {
        "unet": unet_config(size, channels),
        "text_encoder": text_encoder_config(vocab),
        "scheduler": scheduler_config(),
    }
    tokenizer = load_tokenizer(tokenizer_dir, model_max_positions=MAX_LENGTH)
    models = Models(
        unet=unet.UNet2DConditionModel(unet.UNetConfig.from_dict(configs["unet"]), attention="xla"),
        text_encoder=clip.CLIPTextModel(clip.CLIPTextConfig.from_dict(configs["text_encoder"]), attention="xla"),
    )
    schedule = NoiseSchedule.from_config(configs["scheduler"])
    optimizer = make_optimizer(steps, learning_rate, warmup)
    dataset.corruption_counts(batch)  # a batch that cannot hold the shares fails before any work
    hyper = {"seed": seed, "steps": steps, "batch": batch, "learning_rate": learning_rate, "warmup": warmup,
             "ema_decay": ema_decay, "channels": list(channels), "size": size,
             "corrupted_target": "model_full_caption", "corrupted_t": "uniform_logsnr"}

    init_key = jax.random.key(seed)
    unet_key, text_key = jax.random.split(init_key)
    params = {
        "unet": models.unet.init(
            unet_key, jnp.zeros((1, 3, size, size)), jnp.zeros((1,), jnp.int32), jnp.zeros((1, MAX_LENGTH, TEXT_DIM))
        )["params"],
        "text_encoder": models.text_encoder.init(text_key, jnp.zeros((1, MAX_LENGTH), jnp.int32))["params"],
    }
    state = {"params": params, "ema": params, "opt": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}
    log: list[dict] = []
    elapsed = 0.0
    if found is not None:
        state, meta = load_checkpoint(found, state)
        if meta["hyper"] != hyper:
            raise SystemExit(f"{found}: trained with {meta['hyper']}, asked to resume with {hyper}")
        log, elapsed = meta["log"], meta["elapsed_s"]
        print(f"resumed from {found} at step {int(state['step'])}", flush=True)

    train_step = make_train_step(models, optimizer, schedule.alphas_cumprod, ema_decay)
    batches = Batches(tokenizer, seed, batch, size)
    base_key = jax.random.key(seed + 1)
    start = int(state["step"])
    losses = []
    t0 = time.time()
    last = (t0, start)
    end = steps if stop_at is None else min(steps, stop_at)
    for step in range(start, end):
        pixels, ids, full_ids = batches(step)
        state, loss = train_step(state, pixels, ids, full_ids, jax.random.fold_in(base_key, step))
        losses.append(loss)
        done = step + 1
        if done % log_every == 0 or done == steps:
            mean_loss = float(np.mean(jax.device_get(losses)))
            losses = []
            now = time.time()
            rate = (now - last[0]) / (done - last[1])
            last = (now, done)
            log.append({"step": done, "loss": mean_loss, "s_per_step": rate})
            total = elapsed + now - t0
            print(f"step {done:6d}  loss {mean_loss:.4f}  {rate:.3f} s/step  elapsed {total:.0f} s", flush=True)
        if done % checkpoint_every == 0 or done == end:
            save_checkpoint(checkpoints, state, {"hyper": hyper, "log": log, "elapsed_s": elapsed + time.time() - t0})
    elapsed += time.time() - t0
    if end < steps:
        print(f"stopped at step {end} of {steps}; continue with --resume", flush=True)
        return None

    tail = [entry["loss"] for entry in log[-4:]]
    training = {
        "dataset_version": dataset.DATASET_VERSION,
        "command": f"python -m jaxpid.demo.train --out {out} --steps {steps} --seed {seed}",
        **hyper,
        "final_loss": float(np.mean(tail)) if tail else None,
        "final_loss_note": "mean MSE per pixel value over the last 200 training steps: v for full captions, the full caption's prediction for corrupted ones",
        "wall_time_s": round(elapsed, 1),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "jax_backend": jax.default_backend(),
            "device": str(jax.devices()[0].device_kind),
        },
        "versions": {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__},
        "parameters": {name: int(sum(np.size(x) for x in jax.tree.leaves(p))) for name, p in state["ema"].items()},
        "weights": "exponential moving average of the trained weights",
        "log": log,
    }
    write_pipeline(out, tokenizer_files, configs, jax.device_get(state["ema"]), training)
    print(f"wrote {out} (final loss {training['final_loss']:.4f}, {elapsed / 60:.1f} min)", flush=True)
    return training


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jaxpid.demo.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="pipeline folder to write")
    parser.add_argument("--steps", type=int, default=16000)
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=40, help="a multiple of 10 (the caption corruption's shares)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--channels", type=int, nargs=3, default=list(CHANNELS))
    parser.add_argument("--checkpoints", type=Path, default=None, help="default: OUT-checkpoints beside OUT")
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--stop-at", type=int, default=None, help="checkpoint and stop at this step")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be positive")
    try:
        dataset.corruption_counts(args.batch)
    except ValueError as error:
        parser.error(f"--batch: {error}")
    train(
        args.out, args.steps, resume=args.resume, seed=args.seed, batch=args.batch,
        learning_rate=args.learning_rate, channels=args.channels, checkpoints=args.checkpoints,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, stop_at=args.stop_at,
    )


if __name__ == "__main__":
    main()
