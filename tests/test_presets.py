"""The papers' presets: every setting equals the value docs/method.md#presets states, with the same
source; ``--preset infodecomp`` runs Info-Decomp's code's proposal (clip 4) and records it; explicit
options win; studies resolve the preset per study. No model is compiled here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from jaxpid.analysis.config import RunConfig
from jaxpid.analysis.presets import PRESETS, SETTINGS, STUDY_PRESETS, STUDY_SETTINGS, FittedLogistic
from jaxpid.cli.options import run_config
from jaxpid.cli.parsers import build_parser
from jaxpid.cli.options import study_estimator
from jaxpid.core.sampling import LogisticSampler, StratifiedSampler
from jaxpid.errors import ConfigError
from jaxpid.sd.schedule import NoiseSchedule
from jaxpid.sd.weights import resolve_model_path
from jaxpid.sweeps.config import SweepConfig

METHOD = Path(__file__).resolve().parents[1] / "docs" / "method.md"
SCOPES = ("pid, mi, sweep", "study localize", "study retrieve", "study intervene")  # the table's "for" column
# A source names a file:line of Info-Decomp's code, a paper, or says it is jaxpid's own choice.
SOURCE = re.compile(r"\w+\.py:\d+|DiffusionPID|jaxpid's choice")


def documented() -> dict[tuple[str, str, str], tuple[object, str]]:
    """(preset, for, option) -> (value, source) from the table of docs/method.md#presets."""
    text = METHOD.read_text(encoding="utf-8")
    section = text.split("\n## Presets\n", 1)[1].split("\n## ", 1)[0]
    header = "| preset | for | option | value | source |"
    assert header in section, f"docs/method.md#presets has no table headed {header}"
    table = section.split(header, 1)[1].split("\n\n", 1)[0].strip().splitlines()[1:]  # after the |---| line
    rows = {}
    names = {"LogisticSampler": LogisticSampler, "FittedLogistic": FittedLogistic}
    for line in table:
        preset, scope, option, value, source = (c.strip() for c in line.strip().strip("|").split("|"))
        literal = value.strip("`")
        rows[(preset, scope, option)] = (eval(literal, {"__builtins__": {}}, names), source.replace("`", ""))
    assert rows, "no preset table found in docs/method.md#presets"
    return rows


def coded() -> dict[tuple[str, str, str], tuple[object, str]]:
    rows = {(name, "pid, mi, sweep", k): (s.value, s.source) for name, t in SETTINGS.items() for k, s in t.items()}
    for name, studies in STUDY_SETTINGS.items():
        for study, table in studies.items():
            rows.update({(name, f"study {study}", k): (s.value, s.source) for k, s in table.items()})
    return rows


def test_every_preset_setting_is_documented_with_its_source():
    docs, code = documented(), coded()
    assert sorted(docs) == sorted(code)
    for key, (value, source) in code.items():
        assert docs[key][0] == value, f"{key}: docs say {docs[key][0]!r}, code {value!r}"
        assert docs[key][1] == source, f"{key}: the docs' source differs from presets.py's"
        assert SOURCE.search(source), f"{key}: a source must cite a file:line, the paper, or say it is jaxpid's choice"
    assert {scope for _, scope, _ in docs} <= set(SCOPES)
    assert PRESETS == {n: {k: s.value for k, s in t.items()} for n, t in SETTINGS.items()}
    assert STUDY_PRESETS["infodecomp"]["intervene"]["sampler"] == FittedLogistic(clip=3.0)


def test_infodecomp_runs_their_codes_clip_and_records_it():
    config = RunConfig.from_options(preset="infodecomp")
    assert config.estimator.sampler.to_dict() == {"name": "logistic", "loc": 1.0, "scale": 2.0, "clip": 4.0}
    assert config.estimator.sampler.support == (-7.0, 9.0)
    assert (config.estimator.n_samples, config.pid.measure, config.pid.form, config.pid.level, config.conditional) == (
        100, "mmi", "orthogonal", "sum", False)
    record = json.loads(json.dumps(config.to_dict()))  # as result.json holds it
    assert record["estimator"]["sampler"]["clip"] == 4.0 and record["preset"] == "infodecomp"
    assert RunConfig.from_dict(record) == config
    assert RunConfig.from_options(**config.options()).estimator == config.estimator
    dpid = RunConfig.from_options(preset="diffusionpid")
    assert dpid.estimator.sampler == LogisticSampler(loc=1.0, scale=2.0, clip=3.0) and dpid.seeds == (42,)


def test_explicit_options_win_over_the_preset():
    assert RunConfig.from_options("infodecomp", sampler="logistic").estimator.sampler.clip == 3.0
    assert RunConfig.from_options("infodecomp", sampler="stratified").estimator.sampler == StratifiedSampler()
    own = LogisticSampler(loc=0.0, scale=1.5, clip=2.0)
    config = RunConfig.from_options("infodecomp", sampler=own, n_samples=8, measure="ccs")
    assert (config.estimator.sampler, config.estimator.n_samples, config.pid.measure) == (own, 8, "ccs")
    parser = build_parser()
    argv = ["pid", "a red car", "--sources", "red", "car", "--out", "x", "--preset", "infodecomp"]
    assert run_config(parser.parse_args(argv)).estimator.sampler.clip == 4.0
    assert run_config(parser.parse_args([*argv, "--sampler", "uniform"])).estimator.sampler.to_dict()["name"] == "uniform"
    sweep = SweepConfig.from_options("infodecomp")
    assert sweep.estimator.sampler.clip == 4.0 and sweep.measures == ("mmi",)


def test_studies_resolve_the_preset_per_study():
    parser = build_parser()

    def estimator(study, *extra):
        manifest = [] if study == "validate" else ["demo"]
        return study_estimator(parser.parse_args(["study", study, *manifest, "--out", "x", *extra]))

    for study in ("localize", "retrieve"):
        e = estimator(study, "--preset", "infodecomp")
        assert (e.n_samples, e.sampler) == (100, LogisticSampler(loc=1.0, scale=2.0, clip=4.0))
    low, high = NoiseSchedule.from_folder(resolve_model_path("demo") / "scheduler").logsnr_range
    e = estimator("intervene", "--preset", "infodecomp")
    assert e.n_samples == 2400 and e.sampler.clip == 3.0
    assert e.sampler.support == pytest.approx((low, high))  # image_edit.py:35-37: the support is the model's range
    assert e.sampler.to_dict()["loc"] == pytest.approx(0.852688, abs=1e-5)  # their float32 table gives 0.85267
    e = estimator("intervene", "--preset", "infodecomp", "--samples", "64", "--sampler", "logistic")
    assert (e.n_samples, e.sampler) == (64, LogisticSampler())
    assert estimator("localize").sampler == StratifiedSampler()  # no preset: the defaults
    with pytest.raises(ConfigError, match="localize"):
        estimator("words", "--preset", "infodecomp")
    with pytest.raises(SystemExit):  # DiffusionPID's settings are not those of these studies
        parser.parse_args(["study", "localize", "demo", "--out", "x", "--preset", "diffusionpid"])
    with pytest.raises(ConfigError, match="low < high"):
        FittedLogistic().for_range((1.0, 1.0))
