"""Tiny Stable Diffusion 3 pipeline folders for tests, written by diffusers itself (needs torch).

``write_tiny_sd3`` builds random PyTorch components -- ``SD3Transformer2DModel``, two
``CLIPTextModelWithProjection`` (CLIP-L and CLIP-G layouts: end-token and "!" padding, legacy
eos_token_id 2 pooling), an optional ``T5EncoderModel`` (gated GELU, as T5 v1.1), a 16-channel
``AutoencoderKL`` with ``shift_factor`` and a ``FlowMatchEulerDiscreteScheduler`` with ``shift`` --
assembles a ``StableDiffusion3Pipeline`` and saves it with ``save_pretrained(safe_serialization=True)``,
so model_index.json and every file are what diffusers writes. The T5 tokenizer is a tokenizers
Unigram model built from a word list (transformers' T5Tokenizer(vocab=...)): no sentencepiece, no
network. Widths are the real model's ratios shrunk: CLIP-L 16 + CLIP-G 24 features zero-padded to
T5's 48 (``joint_attention_dim``), pooled 16 + 24 = 40.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from sd_folders import WORDS

from jaxpid.sd.tokenizer import write_test_tokenizer

CLIP_L = dict(hidden_size=16, projection_dim=16, intermediate_size=29, num_hidden_layers=3, hidden_act="quick_gelu")
CLIP_G = dict(hidden_size=24, projection_dim=24, intermediate_size=41, num_hidden_layers=3, hidden_act="gelu")
T5 = dict(d_model=48, d_kv=8, d_ff=40, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu")
JOINT_DIM = T5["d_model"]
POOLED_DIM = CLIP_L["projection_dim"] + CLIP_G["projection_dim"]
LATENT_SIZE = 8  # latent side; images are 16 px (2x VAE)
SHIFT = 3.0
SHIFT_FACTOR, SCALING_FACTOR = 0.0609, 1.5305  # SD3's VAE latent normalisation


def transformer_config(sd35: bool = False) -> dict:
    config = dict(sample_size=LATENT_SIZE, patch_size=2, in_channels=16, out_channels=16, num_layers=3,
                  attention_head_dim=8, num_attention_heads=4, joint_attention_dim=JOINT_DIM,
                  caption_projection_dim=32, pooled_projection_dim=POOLED_DIM, pos_embed_max_size=8)
    if sd35:
        config.update(qk_norm="rms_norm", dual_attention_layers=(0, 1))
    return config


VAE = dict(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1, latent_channels=16,
           down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
           sample_size=2 * LATENT_SIZE, shift_factor=SHIFT_FACTOR, scaling_factor=SCALING_FACTOR,
           use_quant_conv=False, use_post_quant_conv=False)


def t5_vocabulary() -> list[tuple[str, float]]:
    """(piece, log-probability) of a small T5 Unigram vocabulary: T5's specials at 0, 1, 2, then
    every test word as one piece, then single characters so any text tokenizes."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + word, -3.0 - 0.01 * i) for i, word in enumerate(dict.fromkeys(w.lower() for w in WORDS))]
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ,.!'"
    return pieces + [(c, -8.0) for c in letters] + [("▁" + c, -9.0) for c in letters]


def write_tiny_sd3(folder: str | Path, *, with_t5: bool = True, sd35: bool = False, seed: int = 0) -> Path:
    """Write a tiny random StableDiffusion3Pipeline folder; returns it.

    Biases and norm weights are perturbed too, so a swapped scale / shift / gate would show.
    """
    import diffusers
    import torch
    import transformers

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as scratch:  # CLIP tokenizers (CLIP-L pads with its end token, CLIP-G "!")
        write_test_tokenizer(Path(scratch) / "l", WORDS, "<|endoftext|>")
        write_test_tokenizer(Path(scratch) / "g", WORDS, "!")
        tokenizer = transformers.CLIPTokenizer.from_pretrained(str(Path(scratch) / "l"))
        tokenizer_2 = transformers.CLIPTokenizer.from_pretrained(str(Path(scratch) / "g"))
        vocab = json.loads((Path(scratch) / "l" / "vocab.json").read_text(encoding="utf-8"))
    common = dict(vocab_size=len(vocab), max_position_embeddings=77, num_attention_heads=4, layer_norm_eps=1e-5,
                  bos_token_id=vocab["<|startoftext|>"], eos_token_id=2)  # SD3's configs pool by the legacy rule
    torch.manual_seed(seed)
    models = {
        "transformer": diffusers.SD3Transformer2DModel(**transformer_config(sd35)),
        "text_encoder": transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(
            **common, **CLIP_L, pad_token_id=vocab["<|endoftext|>"])),
        "text_encoder_2": transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(
            **common, **CLIP_G, pad_token_id=vocab["!"])),
        "vae": diffusers.AutoencoderKL(**VAE),
    }
    tokenizer_3 = None
    if with_t5:
        tokenizer_3 = transformers.T5Tokenizer(vocab=t5_vocabulary(), extra_ids=0)
        models["text_encoder_3"] = transformers.T5EncoderModel(transformers.T5Config(
            vocab_size=len(tokenizer_3), **T5))
    with torch.no_grad():
        for model in models.values():
            model.eval()
            for parameter in model.parameters():
                if parameter.ndim == 1:
                    parameter.add_(0.1 * torch.randn_like(parameter))
    pipe = diffusers.StableDiffusion3Pipeline(
        transformer=models["transformer"], scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=SHIFT),
        vae=models["vae"], text_encoder=models["text_encoder"], tokenizer=tokenizer,
        text_encoder_2=models["text_encoder_2"], tokenizer_2=tokenizer_2,
        text_encoder_3=models.get("text_encoder_3"), tokenizer_3=tokenizer_3)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
