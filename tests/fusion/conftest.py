import pytest


@pytest.fixture(params=[True, False], ids=["contrib", "standard"])
def contrib(request) -> bool:
    """Target with ONNX Runtime contrib ops, or standard ONNX ops only."""
    return request.param
