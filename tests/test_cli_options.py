"""The command line's options against the configuration classes: each default lives in one place.

- An option that sets a configuration field is None when unset and shows the class's current
  default; commands given no options build exactly the classes' default configurations.
- An option with its own default that a library function or class also states agrees with it.
- One name, one meaning: an option string has one destination and one type in every command.
- The estimator and scale-out groups are declared once and reused.
- Old spellings keep working for one release and say the new one on stderr.
- The cli modules stay under 400 lines and ``jaxpid --help`` loads no model code.
No model is compiled here.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jaxpid.analysis.config import RunConfig, estimator_from_options
from jaxpid.analysis.presets import PRESETS
from jaxpid.cli.option_groups import Renamed, default_of
from jaxpid.cli.options import run_config, study_estimator
from jaxpid.cli.parsers import build_parser
from jaxpid.cli.sweeps import sweep_config
from jaxpid.core.config import EstimatorConfig
from jaxpid.core.sampling import LogisticSampler, StratifiedSampler, UniformSampler
from jaxpid.errors import ConfigError
from jaxpid.studies.intervention import InterventionConfig
from jaxpid.studies.localize import LocalizeConfig
from jaxpid.studies.retrieval import RetrievalConfig
from jaxpid.studies.validate import ValidateConfig
from jaxpid.sweeps.config import SweepConfig

CLI = Path(__file__).resolve().parents[1] / "jaxpid" / "cli"
STUDIES = {"localize": LocalizeConfig, "intervene": InterventionConfig, "retrieve": RetrievalConfig,
           "words": SweepConfig, "validate": ValidateConfig}
# the least arguments each command parses with
MINIMAL = {
    "toy": [], "pid": ["a red car", "--sources", "red", "car", "--out", "x"], "mi": ["a red car", "--words", "red",
                                                                                    "--out", "x"],
    "rerun": ["x", "--out", "y"], "generate": ["a red car", "--out", "x.png"], "sweep": ["bias", "--out", "x"],
    "report": ["x", "--out", "y"],
    **{f"study {s}": ([] if s == "validate" else ["demo"]) + ["--out", "x"] for s in STUDIES},
}
# dests that set a configuration field wherever they appear, except in toy (the core on Gaussian
# mixtures, with its own sizes) and report (which selects rows of a finished sweep)
CONFIG_DESTS = {"samples", "sampler", "chunk_size", "key", "target_stderr", "max_samples", "steps", "guidance",
                "removal", "batch_size", "level", "measure", "form", "prior"}
ESTIMATOR = {"--samples", "--sampler", "--chunk-size", "--key"}
ROUNDS = {"--target-stderr", "--max-samples"}


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser by its name ('pid', 'study localize', ...)."""
    def subparsers(parser):
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices

    found = {}
    for name, parser in subparsers(build_parser()).items():
        if name == "study":
            found.update({f"study {s}": p for s, p in subparsers(parser).items()})
        elif name != "bench":  # its own parser (jaxpid.cli.bench)
            found[name] = parser
    return found


def options(parser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, (argparse._HelpAction, Renamed))]


def parse(name: str, *extra: str) -> argparse.Namespace:
    return build_parser().parse_args([*name.split(), *MINIMAL[name], *extra])


def flat(text: str) -> str:
    return " ".join(text.split())


def test_every_command_is_covered():
    assert set(commands()) == set(MINIMAL)


@pytest.mark.parametrize("name", sorted(MINIMAL))
def test_config_options_default_to_none_and_show_the_class_default(name):
    parser = commands()[name]
    shown = flat(parser.format_help())  # reads every default from its class: a moved field fails here
    for action in options(parser):
        flag = action.option_strings[0]
        spec = getattr(action, "config_default", None)
        if spec is None:
            assert name in ("toy", "report") or action.dest not in CONFIG_DESTS, \
                f"jaxpid {name} {flag} sets a configuration field: declare it with config_option"
            assert not re.search(r"\bdefault\b\W{0,3}\d", action.help or ""), \
                f"jaxpid {name} {flag}: a default typed into the help; use %(default)s"
            continue
        assert action.default is None, f"jaxpid {name} {flag}: unset must be None (then preset, then class)"
        assert "%(config_default)s" in action.help
        assert flat(f"default {spec}") in shown or flat(f"default: {spec}") in shown, (name, flag, str(spec))


def test_study_options_show_their_own_configurations_defaults():
    for study, config in STUDIES.items():
        samples = next(a for a in options(commands()[f"study {study}"]) if a.dest == "samples")
        assert samples.config_default.value() == config().estimator.n_samples
    assert ValidateConfig().estimator.n_samples != EstimatorConfig().n_samples  # so the check above can fail
    assert "(default 64)" in flat(commands()["study validate"].format_help())
    assert f"(default {EstimatorConfig().n_samples})" in flat(commands()["study localize"].format_help())


def test_unset_options_build_the_default_configurations():
    assert run_config(parse("pid")) == RunConfig()
    assert run_config(parse("mi")) == RunConfig()
    assert sweep_config(parse("sweep")) == SweepConfig()
    for study, config in STUDIES.items():
        assert study_estimator(parse(f"study {study}")) == config().estimator, study
    given = parse("study validate", "--samples", "12", "--sampler", "logistic")
    assert study_estimator(given) == EstimatorConfig(n_samples=12, sampler=LogisticSampler())
    assert study_estimator(parse("study validate"), samples=32).n_samples == 32


@pytest.mark.parametrize("name", sorted(MINIMAL))
def test_own_defaults_agree_with_the_library(name):
    for action in options(commands()[name]):
        against = getattr(action, "checked_against", None)
        if against is not None:
            value = against.value()
            ours = tuple(action.default) if isinstance(action.default, list) else action.default
            assert ours == value, f"jaxpid {name} {action.option_strings[0]}: {ours!r} here, {value!r} in {against}"


def test_one_name_one_meaning():
    declared: dict[str, set] = {}
    for name, parser in commands().items():
        for action in options(parser):
            kind = "flag" if action.nargs == 0 else getattr(action.type, "__name__", "str")
            for flag in action.option_strings:
                if flag.startswith("--no-"):
                    continue
                declared.setdefault(flag, set()).add((action.dest, kind))
    # report --conditional picks a finished sweep's rows (no / yes) where pid and words compute with it
    clashes = {flag: d for flag, d in declared.items() if len(d) > 1 and flag != "--conditional"}
    assert not clashes, f"one option string, several meanings: {clashes}"
    assert declared["--images"] == {("images", "Path")}  # a folder; the counts are --n-images
    assert declared["--n-images"] == {("n_images", "int")}
    for name, parser in commands().items():
        for action in options(parser):
            if "--seed" in action.option_strings:  # image-generation seeds only
                assert name in ("pid", "mi", "generate") and "image" in action.help
            if "--key" in action.option_strings:  # the seed of the draws, everywhere
                assert "draws" in action.help


def test_estimator_and_scale_out_groups_are_declared_once():
    scale = {}
    for name, parser in commands().items():
        groups = {g.title: g for g in parser._action_groups}
        flags = {f for a in options(parser) for f in a.option_strings}
        if "--samples" in flags and name != "toy":
            declared = {f for a in groups["estimator"]._group_actions for f in a.option_strings}
            assert declared == ESTIMATOR | (ROUNDS if name != "toy" else set()), name
        if name == "sweep" or name.startswith("study "):
            scale[name] = [(a.option_strings, a.choices, a.default, a.help) for a in groups["scale-out"]._group_actions]
    assert len(scale) == 6 and all(s == scale["sweep"] for s in scale.values())
    assert ("--backend",) in [tuple(s[0]) for s in scale["sweep"]]
    declarations = declared_flags()
    for flag in ESTIMATOR | ROUNDS | {f for s in scale["sweep"] for f in s[0]}:
        assert declarations.count(flag) == 1, f"{flag} is declared more than once in jaxpid/cli"


def declared_flags() -> list[str]:
    """The option strings declared in jaxpid/cli's sources, one entry per declaration, except toy's
    (its own sizes and key, not the estimator group) and old spellings (``renamed``)."""
    found = []

    def visit(node, in_toy=False):
        in_toy = in_toy or (isinstance(node, ast.FunctionDef) and node.name == "_add_toy")
        if isinstance(node, ast.Call) and not in_toy and getattr(node.func, "id", None) != "renamed":
            found.extend(a.value for a in node.args
                         if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("--"))
        for child in ast.iter_child_nodes(node):
            visit(child, in_toy)

    for path in CLI.glob("*.py"):
        visit(ast.parse(path.read_text()))
    return found


@pytest.mark.parametrize("command, old, new, values", [
    ("toy", ["--images", "5"], "--n-images", {"n_images": 5}),
    ("toy", ["--seed", "3"], "--key", {"key": 3}),
    ("study validate", ["--images", "2"], "--n-images", {"n_images": 2}),
    ("study localize", ["--seed", "7"], "--split-seed and --demo-seed", {"split_seed": 7, "demo_seed": 7}),
    ("sweep", ["--distributed"], "--backend distributed", {"backend": "distributed"}),
    ("study retrieve", ["--n", "4"], "--n-per-group", {"n": 4}),
])
def test_old_spellings_still_work_and_name_the_new_one(command, old, new, values, capsys):
    args = parse(command, *old)
    assert {k: getattr(args, k) for k in values} == values
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{old[0]} is now {new}" in err, err
    spelled = re.compile(rf"(?<![\w-]){old[0]}(?![\w-])")
    assert not spelled.search(commands()[command].format_help())  # the help teaches the new spelling only


def test_new_spellings_parse_quietly(capsys):
    parser = build_parser()
    assert parser.parse_args(["toy", "--n-images", "5", "--key", "3"]).n_images == 5
    localize = parser.parse_args(["study", "localize", "demo", "--out", "x", "--split-seed", "1", "--demo-seed", "2"])
    assert (localize.split_seed, localize.demo_seed) == (1, 2)
    assert parser.parse_args(["study", "validate", "--out", "x", "--n-images", "3"]).n_images == 3
    assert parser.parse_args(["sweep", "bias", "--out", "x", "--backend", "ray"]).backend == "ray"
    assert parser.parse_args(["study", "retrieve", "demo", "--out", "x", "--n-per-group", "4"]).n == 4
    assert capsys.readouterr().err == ""


def test_one_estimator_builder():
    """Explicit options win over a preset's, which win over the defaults given, in every path."""
    clip4 = LogisticSampler(loc=1.0, scale=2.0, clip=4.0)
    cases = [  # (preset, explicit, expected)
        (None, {}, EstimatorConfig()),
        ("infodecomp", {}, EstimatorConfig(n_samples=100, sampler=clip4)),
        ("diffusionpid", {"n_samples": 8}, EstimatorConfig(n_samples=8, sampler=LogisticSampler())),
        ("infodecomp", {"sampler": "uniform", "key": 3, "chunk_size": 2},
         EstimatorConfig(n_samples=100, sampler=UniformSampler(), key=3, chunk_size=2)),
    ]
    for preset, explicit, expected in cases:
        assert estimator_from_options(PRESETS.get(preset), **explicit) == expected
        assert RunConfig.from_options(preset, **explicit).estimator == expected
        assert SweepConfig.from_options(preset, **explicit).estimator == expected
    mine = EstimatorConfig(n_samples=64)
    assert estimator_from_options(None, defaults=mine) == mine
    assert estimator_from_options({"n_samples": 50, "measure": "ppid"}, defaults=mine, n_samples=None).n_samples == 50
    assert estimator_from_options(None, sampler="stratified").sampler == StratifiedSampler()
    with pytest.raises(ConfigError, match="unknown estimator option"):
        estimator_from_options(None, measure="mmi")
    with pytest.raises(ConfigError, match="n_samples"):
        estimator_from_options(None, n_samples=1)


def test_the_parsers_lists_of_names_are_the_librarys():
    """The parsers keep their own copies of some choices, so as not to import the model code."""
    from jaxpid.analysis.config import SAMPLERS
    from jaxpid.cli import option_groups
    from jaxpid.sd.prompts import REMOVALS

    assert option_groups.SAMPLERS == tuple(SAMPLERS) and option_groups.REMOVALS == REMOVALS


def test_preset_help_names_options_that_exist():
    from jaxpid.cli.parsers import PRESET_HELP

    flags = {f for a in options(commands()["pid"]) for f in a.option_strings}
    named = set(re.findall(r"--[a-z][\w-]*", PRESET_HELP))
    assert named and named <= flags, named - flags
    assert "--samples 50" in PRESET_HELP and "clip 4" in PRESET_HELP  # diffusionpid's count, infodecomp's clip


def test_default_of_reads_classes_and_functions():
    assert default_of(ValidateConfig, "estimator.n_samples") == ValidateConfig().estimator.n_samples
    assert default_of("jaxpid.sweeps.config:SweepConfig", "measures") == SweepConfig().measures
    assert default_of("jaxpid.sweeps.jobs:bias_study_jobs", "seeds") == (42,)  # DiffusionPID's seed


def test_cli_modules_are_small_and_help_is_light():
    sizes = {p.name: len(p.read_text().splitlines()) for p in CLI.glob("*.py")}
    assert max(sizes.values()) <= 400, sizes
    code = ("import sys\nfrom jaxpid.cli.parsers import build_parser\nbuild_parser().format_help()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flax', 'transformers', 'pyarrow', "
            "'matplotlib', 'torch') or m.startswith(('jaxpid.sd', 'jaxpid.studies', 'jaxpid.sweeps'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
