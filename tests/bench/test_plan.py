"""The typed configuration: provider names resolved once, bad values rejected with one line."""

from __future__ import annotations

import pytest

from fastattn.bench.plan import Job, Plan, ProviderChoice, Settings, parse_sizes
from fastattn.errors import InputError


@pytest.mark.parametrize(
    ("text", "name", "ort_name"),
    [
        ("cpu", "cpu", "CPUExecutionProvider"),
        ("OpenVINO", "openvino", "OpenVINOExecutionProvider"),
        ("CUDAExecutionProvider", "cuda", "CUDAExecutionProvider"),
        ("directml", "dml", "DmlExecutionProvider"),  # an alias resolves to its canonical name
        (
            "azureexecutionprovider",
            "AzureExecutionProvider",
            "AzureExecutionProvider",
        ),  # ORT name, no short one
    ],
)
def test_provider_names_resolve(text, name, ort_name):
    assert ProviderChoice.parse(text) == ProviderChoice(name, ort_name)


def test_unknown_provider_is_one_line_with_the_choices():
    with pytest.raises(InputError, match=r"unknown execution provider 'tpu'\. Fix: use one of cpu, cuda, "):
        ProviderChoice.parse("tpu")


def test_plan_create_resolves_dedupes_and_sorts_a_sweep():
    plan = Plan.create(
        ["out"], ["cpu", "CPU", "openvino"], batches=(8, 1, 8), sequences=(2048, 512, 1024), sweep=True
    )
    assert [p.name for p in plan.providers] == ["cpu", "openvino"]
    assert plan.batches == (8, 1) and plan.sequences == (512, 1024, 2048)
    assert plan.to_dict()["providers"] == ["cpu", "openvino"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batches": ()}, "bad batch sizes"),
        ({"sequences": (0,)}, "bad sequence lengths"),
        ({"sequences": (512,), "sweep": True}, "needs at least two lengths"),
    ],
)
def test_bad_plans(kwargs, message):
    with pytest.raises(InputError, match=message):
        Plan.create(["out"], **kwargs)
    with pytest.raises(InputError, match="no export directory"):
        Plan.create([])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"threads": 0}, "bad threads 0"), ({"repeats": 0}, "bad repeats"), ({"min_time": -1}, "bad min-time"),
     ({"decode_steps": -1}, "bad decode-steps"), ({"warmup": -2}, "bad warmup")],
)  # fmt: skip
def test_bad_settings(kwargs, message):
    with pytest.raises(InputError, match=message):
        Settings(**kwargs)


def test_parse_sizes():
    assert parse_sizes("1, 8", "--batch") == (1, 8)
    for bad in ("", "x", "1,-2", "0"):
        with pytest.raises(InputError, match="bad --seq"):
            parse_sizes(bad, "--seq")


def test_job_round_trips_through_json_dicts():
    job = Job("out", "out", "openvino", 8, 512, Settings(threads=3, repeats=40), checkpoint="m.pt")
    assert Job.from_dict(job.to_dict()) == job
