"""Execution-provider resolution: names, defaults, fallback, and the errors a user sees."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from fastattn.errors import ProviderError
from fastattn.runtime import providers as eps
from fastattn.runtime.providers import Provider, resolve

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
GPU_INSTALL = [TRT, CUDA, CPU]  # what onnxruntime-gpu reports on a CUDA machine


@pytest.mark.parametrize("name", ["cpu", "CPU", "Cpu", "CPUExecutionProvider", "cpuexecutionprovider"])
def test_cpu_by_any_spelling(name):
    assert resolve([name]) == [CPU]


def test_no_names_gives_cpu():
    assert resolve([]) == [CPU]


@pytest.mark.parametrize("name", ["cuda", "CUDA", CUDA])
def test_simulated_cuda_install(name):
    assert resolve([name], available=GPU_INSTALL) == [CUDA, CPU]


def test_cpu_is_not_duplicated_and_order_is_kept():
    assert resolve(["cpu", "cuda"], available=GPU_INSTALL) == [CPU, CUDA]
    assert resolve(["cuda", "CUDA", CUDA], available=GPU_INSTALL) == [CUDA, CPU]


def test_tensorrt_falls_back_to_cuda_then_cpu():
    assert resolve(["tensorrt"], available=GPU_INSTALL) == [TRT, CUDA, CPU]


def test_default_and_user_options():
    mac = ["CoreMLExecutionProvider", CPU]
    assert resolve(["coreml"], available=mac) == [
        ("CoreMLExecutionProvider", {"ModelFormat": "MLProgram"}),
        CPU,
    ]
    assert resolve([("cuda", {"device_id": "1"})], available=GPU_INSTALL) == [(CUDA, {"device_id": "1"}), CPU]


def test_directml_is_an_alias_of_dml():
    assert Provider["DIRECTML"] is Provider.DML
    win = ["DmlExecutionProvider", CPU]
    assert (
        resolve(["directml"], available=win)
        == resolve(["dml"], available=win)
        == ["DmlExecutionProvider", CPU]
    )


def test_dml_needs_sequential_execution():
    options = ort.SessionOptions()
    eps.configure(options, ["DmlExecutionProvider", CPU])
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.enable_mem_pattern is False
    untouched = ort.SessionOptions()
    eps.configure(untouched, [CPU])
    assert untouched.enable_mem_pattern is True


def test_full_ort_name_without_short_name():
    assert resolve(["azureexecutionprovider"], available=["AzureExecutionProvider", CPU]) == [
        "AzureExecutionProvider",
        CPU,
    ]


def test_ort_names_are_real():
    """Every entry names a provider ORT knows (ROCm left ORT's list when its EP was retired)."""
    known = set(ort.get_all_providers()) | {"ROCMExecutionProvider"}
    assert {p.info.ort_name for p in Provider} <= known
    assert len(Provider.short_names()) == 12 and "directml" in Provider.short_names()


@pytest.mark.parametrize("name", ["cudaa", "FooExecutionProvider", ""])
def test_unknown_name(name):
    with pytest.raises(ProviderError) as e:
        resolve([name])
    message = str(e.value)
    assert f"unknown execution provider {name!r}" in message
    assert (
        "cpu, cuda, tensorrt, openvino, dml, directml, coreml, rocm, migraphx, qnn, xnnpack, webgpu"
        in message
    )
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "package"),
    [
        ("cuda", "onnxruntime-gpu"),
        ("openvino", "onnxruntime-openvino"),
        ("dml", "onnxruntime-directml"),
        ("qnn", "onnxruntime-qnn"),
        ("rocm", "onnxruntime-rocm"),
        ("migraphx", "onnxruntime-migraphx"),
    ],
)
def test_not_installed_names_the_package(name, package):
    with pytest.raises(ProviderError) as e:
        resolve([name], available=["AzureExecutionProvider", CPU])
    message = str(e.value)
    assert (
        "is not in this onnxruntime install, which has AzureExecutionProvider, CPUExecutionProvider"
        in message
    )
    assert f"Fix: pip install {package} in its own virtual environment" in message
    assert "\n" not in message


def test_not_installed_against_the_real_install():
    with pytest.raises(ProviderError) as e:
        resolve(["openvino"])
    assert ", ".join(ort.get_available_providers()) in str(e.value)
    assert "pip install onnxruntime-openvino" in str(e.value)


def test_source_build_only_provider():
    with pytest.raises(
        ProviderError, match=r"Fix: use an onnxruntime built with it \(build option --use_xnnpack\)"
    ):
        resolve(["xnnpack"], available=[CPU])


def test_second_name_is_checked_too():
    with pytest.raises(ProviderError, match="OpenVINOExecutionProvider"):
        resolve(["cuda", "openvino"], available=GPU_INSTALL)
