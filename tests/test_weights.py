"""Reading diffusers component folders: safetensors only, variants, shards, hub boundary."""

import fnmatch
import json
import pickle
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from jaxpid.errors import ConfigError, PickleRefusedError, WeightsError, WeightsMismatchError
from jaxpid.sd.weights import (
    MissingShardError,
    ModelNotFoundError,
    NotAPipelineError,
    find_weight_files,
    fingerprint,
    hub_allow_patterns,
    load_component_weights,
    read_json_config,
    read_model_index,
    resolve_model_path,
)


def _tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv_in.weight": rng.standard_normal((8, 4, 3, 3)).astype(np.float32),
        "conv_in.bias": rng.standard_normal(8).astype(np.float16),
        "norm.weight": rng.standard_normal(8).astype(ml_dtypes.bfloat16),
    }


def _assert_same(state, expected):
    assert set(state) == set(expected)
    for name, array in expected.items():
        assert state[name].dtype == array.dtype, name
        np.testing.assert_array_equal(state[name].astype(np.float32), array.astype(np.float32))


def test_single_file_keeps_fp16_and_bf16(tmp_path):
    tensors = _tensors()
    save_file(tensors, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    _assert_same(load_component_weights(tmp_path), tensors)


def test_transformers_name_is_found(tmp_path):
    tensors = _tensors()
    save_file(tensors, str(tmp_path / "model.safetensors"))
    _assert_same(load_component_weights(tmp_path), tensors)


def test_variant_selection(tmp_path):
    plain, half = _tensors(0), _tensors(1)
    save_file(plain, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    save_file(half, str(tmp_path / "diffusion_pytorch_model.fp16.safetensors"))
    _assert_same(load_component_weights(tmp_path), plain)
    _assert_same(load_component_weights(tmp_path, variant="fp16"), half)
    with pytest.raises(WeightsError, match="bf16"):
        load_component_weights(tmp_path, variant="bf16")


def test_lone_variant_is_used_without_asking(tmp_path):
    half = _tensors(1)
    save_file(half, str(tmp_path / "model.fp16.safetensors"))
    _assert_same(load_component_weights(tmp_path), half)


def test_two_variants_without_choice_is_an_error(tmp_path):
    save_file(_tensors(1), str(tmp_path / "model.fp16.safetensors"))
    save_file(_tensors(2), str(tmp_path / "model.bf16.safetensors"))
    with pytest.raises(WeightsError, match="variant"):
        load_component_weights(tmp_path)


def _write_sharded(folder: Path, tensors, variant: str | None = None) -> list[str]:
    stem = "diffusion_pytorch_model" + (f".{variant}" if variant else "")
    names = sorted(tensors)
    shards = {f"{stem}-00001-of-00002.safetensors": names[:2], f"{stem}-00002-of-00002.safetensors": names[2:]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(folder / shard))
        weight_map.update({k: shard for k in keys})
    index = "diffusion_pytorch_model.safetensors.index" + (f".{variant}" if variant else "") + ".json"
    (folder / index).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return list(shards)


@pytest.mark.parametrize("variant", [None, "fp16"])
def test_sharded(tmp_path, variant):
    tensors = _tensors()
    _write_sharded(tmp_path, tensors, variant)
    assert len(find_weight_files(tmp_path, variant)) == 2
    _assert_same(load_component_weights(tmp_path, variant), tensors)


def test_missing_shard_is_named(tmp_path):
    shards = _write_sharded(tmp_path, _tensors())
    (tmp_path / shards[1]).unlink()
    with pytest.raises(MissingShardError, match=shards[1]):
        load_component_weights(tmp_path)


class _Bomb:
    """Unpickling this creates a marker file: proof that a loader unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["diffusion_pytorch_model.bin", "model.ckpt", "weights.pt"])
def test_pickle_only_is_refused_unopened(tmp_path, name):
    marker = tmp_path / "unpickled"
    (tmp_path / name).write_bytes(pickle.dumps(_Bomb(marker)))
    with pytest.raises(PickleRefusedError, match=name) as raised:
        load_component_weights(tmp_path)
    assert "safe_serialization=True" in str(raised.value)
    assert not marker.exists()


def test_no_weights_at_all(tmp_path):
    with pytest.raises(WeightsError, match="no weights"):
        load_component_weights(tmp_path)


def test_corrupt_safetensors_is_a_weights_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(WeightsError, match="model.safetensors"):
        load_component_weights(tmp_path)


def test_mismatch_names_missing_extra_and_misshaped_tensors(tmp_path):
    """The converter, fed by the reader, names every bad tensor of a tiny UNet."""
    import jax

    from jaxpid.sd.models.convert import convert_state_dict, flax_to_state_dict
    from jaxpid.sd.models.unet import UNetConfig, expected_params

    config = UNetConfig.from_dict(
        {
            "block_out_channels": [8, 16],
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "layers_per_block": 1,
            "attention_head_dim": 2,
            "cross_attention_dim": 8,
            "norm_num_groups": 4,
            "sample_size": 4,
        }
    )
    expected = expected_params(config)
    zeros = jax.tree.map(lambda spec: np.zeros(spec.shape, np.float32), expected)
    state = flax_to_state_dict(zeros)
    del state["conv_in.bias"]
    state["conv_out.weight"] = np.zeros((3, 8, 3, 3), np.float32)
    state["extra_head.weight"] = np.zeros((2, 2), np.float32)
    save_file(state, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(WeightsMismatchError) as raised:
        convert_state_dict(load_component_weights(tmp_path), expected, what="unet")
    message = str(raised.value)
    for name in ("conv_in.bias", "conv_out.weight", "extra_head.weight"):
        assert name in message


def test_read_json_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_json_config(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ConfigError, match="JSON"):
        read_json_config(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="object"):
        read_json_config(tmp_path)


def test_model_index_required_and_checked(tmp_path):
    with pytest.raises(NotAPipelineError, match="not a diffusers pipeline"):
        read_model_index(tmp_path)
    index = {"unet": ["diffusers", "UNet2DConditionModel"], "vae": [None, None]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(NotAPipelineError, match="text_encoder"):
        read_model_index(tmp_path)
    index.update(text_encoder=["transformers", "CLIPTextModel"], tokenizer=["transformers", "CLIPTokenizer"],
                 scheduler=["diffusers", "DDIMScheduler"])
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    assert read_model_index(tmp_path)["vae"] == [None, None]


def _pipeline_files(folder: Path, seed: int = 0) -> Path:
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DConditionModel"]}))
    (folder / "unet" / "config.json").write_text(json.dumps({"sample_size": 8}))
    big = np.random.default_rng(seed).standard_normal(3 << 18).astype(np.float32)  # 3 MiB
    save_file({"a": big, "b": np.zeros(4, np.float32)}, str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    return folder


def test_fingerprint_tracks_content_not_location(tmp_path):
    first = _pipeline_files(tmp_path / "one")
    second = _pipeline_files(tmp_path / "two")
    assert fingerprint(first) == fingerprint(second)
    assert fingerprint(first) != fingerprint(first, variant="fp16")
    (second / "unet" / "config.json").write_text(json.dumps({"sample_size": 16}))
    assert fingerprint(first) != fingerprint(second)
    third = _pipeline_files(tmp_path / "three")
    weights = third / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # a value in the last MiB
    weights.write_bytes(bytes(data))
    assert fingerprint(first) != fingerprint(third)


def test_hub_patterns_take_configs_and_safetensors_only():
    patterns = hub_allow_patterns()
    wanted = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer/tokenizer_config.json",
        "tokenizer/special_tokens_map.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "text_encoder/model.safetensors.index.json",
        "text_encoder/model-00001-of-00002.safetensors",
    ]
    unwanted = [
        "unet/diffusion_pytorch_model.bin",
        "text_encoder/pytorch_model.bin",
        "v2-1_512-ema-pruned.ckpt",
        "v2-1_512-ema-pruned.safetensors",
        "safety_checker/model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.msgpack",
        "unet/model.onnx",
    ]
    matches = lambda name, pats: any(fnmatch.fnmatch(name, p) for p in pats)  # noqa: E731
    assert all(matches(name, patterns) for name in wanted)
    assert not any(matches(name, patterns) for name in unwanted)
    fp16 = hub_allow_patterns("fp16")
    assert matches("unet/diffusion_pytorch_model.fp16.safetensors", fp16)
    assert matches("unet/diffusion_pytorch_model.safetensors.index.fp16.json", fp16)
    assert matches("unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors", fp16)
    assert not matches("unet/diffusion_pytorch_model.safetensors", fp16)
    assert not any(pattern.endswith((".bin", ".ckpt", ".pt", "*")) for pattern in patterns + fp16)


def test_hub_id_goes_through_snapshot_download(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(_pipeline_files(tmp_path / "snapshot"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    folder = resolve_model_path("someone/tiny-sd", variant="fp16")
    assert folder == tmp_path / "snapshot"
    (repo_id, kwargs), = calls
    assert repo_id == "someone/tiny-sd"
    assert kwargs["allow_patterns"] == hub_allow_patterns("fp16")
    assert not any(fnmatch.fnmatch("unet/diffusion_pytorch_model.bin", p) for p in kwargs["allow_patterns"])


def test_hub_failure_and_bad_names(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def offline(repo_id, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelNotFoundError, match="no network"):
        resolve_model_path("someone/tiny-sd")
    for name in [str(tmp_path / "absent" / "model"), "not a model", "./relative/model", "a/b/c"]:
        with pytest.raises(ModelNotFoundError, match="no such folder"):
            resolve_model_path(name)
    assert resolve_model_path(tmp_path) == tmp_path
