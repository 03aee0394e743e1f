"""Options that several ``jaxpid`` commands share, and where each option's default lives.

- An option that sets a configuration field (``EstimatorConfig.n_samples``, ``LocalizeConfig.fit``,
  ...) is declared with ``config_option``: argparse's default is None, so an unset option takes
  the preset's value, then the configuration's own default, where the configuration is built.
  Its help shows that default, read from the class when the help is printed.
- Any other option states its default once, in ``default=``, and its help shows it through
  ``%(default)s``; where a library function or class has the same default, ``checked_option``
  names it and tests/test_cli_options.py checks that the two agree.
- An old spelling (``renamed``) keeps working for one release and says the new one on stderr.

Configuration classes are named as "module:Name" and imported only when a help text is printed:
their modules load Flax and Parquet, and ``jaxpid --help`` must answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jaxpid.core.config import EstimatorConfig

SAMPLERS = ("stratified", "logistic", "uniform", "stratified-uniform")  # = jaxpid.analysis.config.SAMPLERS
DTYPE_CHOICES = ("fp32", "bf16", "fp16")
REMOVALS = ("delete", "placeholder")  # = jaxpid.sd.prompts.WordRemoval's modes
BACKENDS = ("local", "ray", "distributed")

MODEL_SPEC = "jaxpid.sd.pipeline:ModelSpec"
RUN_CONFIG = "jaxpid.analysis.config:RunConfig"
SWEEP_CONFIG = "jaxpid.sweeps.config:SweepConfig"
PID_CONFIG = "jaxpid.core.config:PIDConfig"


# ---------------------------------------------------------------------------------------------
# Where a default lives


def default_of(owner: Any, path: str) -> Any:
    """The default of ``path`` in ``owner``: a configuration class (an attribute path of its
    default instance, e.g. ``default_of(LocalizeConfig, "estimator.n_samples")``) or a function
    (a parameter's default). ``owner`` may be the object or its "module:Name" ("module:Class.method"
    for a method's parameter)."""
    if isinstance(owner, str):
        module, _, name = owner.partition(":")
        owner = functools.reduce(getattr, name.split("."), importlib.import_module(module))
    if isinstance(owner, type):
        return functools.reduce(getattr, path.split("."), owner())
    return inspect.signature(owner).parameters[path].default


def show_value(value: Any) -> str:
    """A default as the user would type it on the command line."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (tuple, list)):
        return " ".join(show_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclasses.dataclass(frozen=True)
class ConfigDefault:
    """The default of a configuration field (or function parameter), shown in an option's help as
    ``%(config_default)s``; looked up only when the help is printed."""

    owner: str  # "module:Name" of the class or function
    path: str  # an attribute path of the default instance, or a parameter name
    show: Callable[[Any], str] = show_value  # the value as the help words it
    none: str = "none"  # what a default of None means, in words

    def value(self) -> Any:
        return default_of(self.owner, self.path)

    def __str__(self) -> str:
        value = self.value()
        return self.none if value is None else self.show(value)


@dataclasses.dataclass(frozen=True)
class Defaults:
    """Several defaults of one option, by case (e.g. the shipped and the demo pairs' seeds)."""

    cases: Mapping[str, ConfigDefault]

    def value(self) -> dict[str, Any]:
        return {case: default.value() for case, default in self.cases.items()}

    def __str__(self) -> str:
        return "; ".join(f"{case}: {default}" for case, default in self.cases.items())


def config_option(p, *flags: str, default: ConfigDefault | Defaults, help: str, **kwargs) -> argparse.Action:
    """An option that sets a configuration field: None when unset (the preset's value, then the
    configuration's default applies), its help's ``%(config_default)s`` read from ``default``."""
    action = p.add_argument(*flags, default=None, **kwargs)
    # argparse formats help with the action's attributes; the help is set after add_argument, which
    # in newer Pythons expands it once as a check and would import the configuration's module
    action.help, action.config_default = help, default
    return action


def checked_option(p, *flags: str, default: Any, against: ConfigDefault, **kwargs) -> argparse.Action:
    """An option with its own default that must equal a library default (``against``), because
    the command passes it on explicitly; tests/test_cli_options.py holds the two together."""
    action = p.add_argument(*flags, default=default, **kwargs)
    action.checked_against = against
    return action


class Renamed(argparse.Action):
    """An option's old spelling: it still works for one release, and says the new one on stderr."""

    def __init__(self, option_strings, dest, *, new: str, targets: tuple[str, ...] = (), value: Any = None,
                 nargs=None, **kwargs):
        super().__init__(option_strings, dest, nargs=nargs, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                         **kwargs)
        self.new, self.targets, self.value = new, targets or (dest,), value

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is now {self.new}; the old spelling goes in the next release",
              file=sys.stderr)
        for target in self.targets:
            setattr(namespace, target, values if self.value is None else self.value)


def renamed(p, old: str, new: str, *, dest: str, targets: tuple[str, ...] = (), value: Any = None,
            **kwargs) -> argparse.Action:
    """``old`` as an alias of ``new`` (setting ``targets``, default ``dest``; ``value``: a flag's)."""
    if value is not None:
        kwargs["nargs"] = 0
    return p.add_argument(old, dest=dest, action=Renamed, new=new, targets=targets, value=value, **kwargs)


# ---------------------------------------------------------------------------------------------
# How defaults read in help


def sampler_text(sampler: Any) -> str:
    """A sampler as its --sampler name and parameters."""
    record = sampler.to_dict()
    if record["name"] != "stratified":
        return f"{record['name']} (loc {record['loc']:g}, scale {record['scale']:g}, clip {record['clip']:g})"
    proposal = record["proposal"]
    name = "stratified" if proposal["name"] == "logistic" else f"stratified-{proposal['name']}"
    strata = "samples // 2" if record["strata"] is None else record["strata"]
    return (f"{name} = the {proposal['name']} proposal (loc {proposal['loc']:g}, scale {proposal['scale']:g}, "
            f"clip {proposal['clip']:g}) in {strata} strata")


def rounds_text(_: Any) -> str:
    """max_samples' default when a target is set: a number of rounds of n_samples."""
    config = EstimatorConfig(n_samples=4, target_stderr=1.0)
    return f"{config.max_samples // config.n_samples} rounds of --samples"


def conditional_text(conditional: bool) -> str:
    return "conditional PID, --conditional" if conditional else "plain PID, --no-conditional"


def of_decompositions(field: str) -> Callable[[Any], str]:
    """A sweep's default measures / forms / levels, from its default decompositions."""
    return lambda decompositions: show_value(tuple(dict.fromkeys(getattr(d, field) for d in decompositions)))


PRESET_FLAGS = {"n_samples": "--samples", "seeds": "--seed"}  # a preset's option names that the CLI spells otherwise


def preset_text(settings: Mapping[str, Any]) -> str:
    """A preset's settings as the options they stand for."""
    def option(name, v):
        if isinstance(v, bool):
            return f"--{name}" if v else f"--no-{name}"
        if hasattr(v, "for_range"):  # jaxpid.analysis.presets.FittedLogistic
            text = f"a logistic fitted to the model's log-SNR range (clip {v.clip:g})"
        else:
            text = sampler_text(v) if hasattr(v, "to_dict") else show_value(v)
        return f"{PRESET_FLAGS.get(name, '--' + name.replace('_', '-'))} {text}"
    return ", ".join(option(name, v) for name, v in settings.items())


# ---------------------------------------------------------------------------------------------
# Shared option groups


def model_options(p) -> None:
    """The model and its numerics: the fields of ``ModelSpec``."""
    field = lambda name: ConfigDefault(MODEL_SPEC, name)  # noqa: E731
    checked_option(p, "--model", default="demo", against=field("name"),
                   help="'demo' (the small model shipped with jaxpid, the default), a local diffusers "
                        "folder, or a Hugging Face hub id such as stabilityai/stable-diffusion-2-1-base")
    checked_option(p, "--dtype", choices=DTYPE_CHOICES, default="fp32", against=field("dtype"),
                   help="compute dtype (bf16: bfloat16 matmuls with float32 accumulation; default %(default)s)")
    checked_option(p, "--param-dtype", choices=DTYPE_CHOICES, default="fp32", against=field("param_dtype"),
                   help="dtype the weights are stored in (default %(default)s)")
    checked_option(p, "--attention", choices=("auto", "xla", "cudnn"), default="auto", against=field("attention"),
                   help="attention implementation (auto, the default: cuDNN flash attention on a GPU in bf16/fp16, "
                        "else XLA)")
    checked_option(p, "--variant", default=None, against=field("variant"), help="weights variant, e.g. fp16")
    checked_option(p, "--time-ids", type=int, nargs=6, default=None, against=field("time_ids"),
                   metavar=("H0", "W0", "TOP", "LEFT", "H", "W"),
                   help="SDXL only: size conditioning in pixels (original size, crop top-left, target size); "
                        "default: diffusers' (the image size, crop 0 0)")
    checked_option(p, "--no-t5", dest="t5", action="store_false", default=True, against=field("t5"),
                   help="SD3 only: leave the T5 text encoder (text_encoder_3) unloaded and feed zeros in its place, "
                        "as diffusers does without it (T5-XXL: 4.76 B parameters, 8.9 GiB in bf16); recorded in the "
                        "model identity")
    checked_option(p, "--t5-max-length", type=int, default=256, against=field("max_sequence_length"),
                   metavar="TOKENS", help="SD3 only: T5 tokens per prompt (diffusers' max_sequence_length, at most "
                                          "512; default %(default)s)")


def generation_options(p, owner: str = RUN_CONFIG) -> None:
    """DDIM steps and guidance: ``owner``'s ``generation`` field."""
    config_option(p, "--steps", type=int, default=ConfigDefault(owner, "generation.steps"),
                  help="DDIM steps for generation (default %(config_default)s)")
    config_option(p, "--guidance", type=float, default=ConfigDefault(owner, "generation.guidance_scale"),
                  help="classifier-free guidance scale (default %(config_default)s)")


def estimator_options(p, owner: str, *, unit: str = "image", rounds: bool = False) -> None:
    """The estimator's settings: ``owner``'s ``estimator`` field (``EstimatorConfig``). With
    ``rounds``, the target standard error reached in rounds of samples (pid and mi)."""
    field = lambda name, **kw: ConfigDefault(owner, f"estimator.{name}", **kw)  # noqa: E731
    group = p.add_argument_group("estimator")
    config_option(group, "--samples", type=int, default=field("n_samples"),
                  help=f"log-SNR samples per {unit} (default %(config_default)s)")
    config_option(group, "--sampler", choices=SAMPLERS, default=field("sampler", show=sampler_text),
                  help="importance sampler over log-SNR (default %(config_default)s); logistic: independent "
                       "draws from that proposal (the presets'); uniform and stratified-uniform: a uniform proposal")
    config_option(group, "--chunk-size", type=int, default=field("chunk_size", none="auto"),
                  help="log-SNR samples per device per step (default %(config_default)s)")
    config_option(group, "--key", type=int, default=field("key"),
                  help=f"seed of the estimator's (log-SNR, noise) draws: {unit} i draws from fold_in(key, i) "
                       "(default %(config_default)s)")
    if rounds:
        config_option(group, "--target-stderr", type=float, metavar="NATS",
                      default=field("target_stderr", none="none: one round of --samples"),
                      help=f"add rounds of --samples samples per {unit} (one compiled program) until every standard "
                           f"error it reports is at most NATS, or --max-samples (default %(config_default)s)"
                           + ("" if unit == "image" else f"; a finished {unit}'s slot takes the next {unit}"))
        config_option(group, "--max-samples", type=int, default=field("max_samples", none=rounds_text(None)),
                      help=f"cap of the samples per {unit} with --target-stderr (default %(config_default)s)")


def removal_option(p, owner: str, what: str = "an absent word") -> None:
    config_option(p, "--removal", choices=REMOVALS, default=ConfigDefault(owner, "removal.mode"),
                  help=f"how {what} leaves the prompt (default %(config_default)s)")


def output_options(p) -> None:
    p.add_argument("--out", type=Path, required=True, help="directory for result.json, maps.npz, images, panel.png")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out")


def scale_out_options(p) -> None:
    """How a sweep's or study's batches are spread: shards, and the local, Ray or multi-host runner."""
    group = p.add_argument_group("scale-out")
    group.add_argument("--shard", default="0/1", help="i/n: compute only batches b with b %% n == i (default %(default)s)")
    checked_option(group, "--backend", choices=BACKENDS, default="local",
                   against=ConfigDefault("jaxpid.studies.base:run_study", "backend"),
                   help="local (the default): this process, all its devices; ray: batches as Ray tasks; "
                        "distributed: multi-host JAX (jax.distributed.initialize(), every process computes, process 0 "
                        "writes)")
    group.add_argument("--ray-address", default=None,
                       help="an existing Ray cluster ('auto', 'ray://host:10001'); default: start a local one")
    group.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray runtime")
    checked_option(group, "--ray-retries", type=int, default=3,
                   against=ConfigDefault("jaxpid.sweeps.distributed:run_sweep_ray", "max_retries"),
                   help="retries of a task whose worker died (default %(default)s)")
    checked_option(group, "--ray-gpus-per-task", type=float, default=0.0,
                   against=ConfigDefault("jaxpid.sweeps.distributed:run_sweep_ray", "gpus_per_task"),
                   help="GPUs each Ray task asks for (default %(default)s)")
    group.add_argument("--coordinator", default=None,
                       help="distributed: host:port of process 0 (default: from the environment)")
    group.add_argument("--num-processes", type=int, default=None, help="distributed: number of processes")
    group.add_argument("--process-id", type=int, default=None, help="distributed: this process' index")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
