import pytest

from fastattn.attention.spec import AttentionSpec


@pytest.mark.parametrize(
    "kwargs, kind",
    [({}, "full"), ({"causal": True}, "causal"), ({"window": 8}, "sliding"), ({"window": 8, "global_tokens": 2}, "global_local")],
)
def test_kind(kwargs, kind):
    assert AttentionSpec(8, 2, **kwargs).kind == kind


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_heads": 8, "kv_num_heads": 3}, "must be positive and divide"),
        ({"num_heads": 8, "kv_num_heads": 2, "window": -1}, ">= 0"),
        ({"num_heads": 8, "kv_num_heads": 2, "global_tokens": 4}, "needs a window"),
    ],
)
def test_invalid(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionSpec(**kwargs)


def test_group_size_and_scale():
    spec = AttentionSpec(8, 2)
    assert spec.group_size == 4
    assert spec.head_scale(16) == 0.25
    assert AttentionSpec(8, 8, scale=0.5).head_scale(16) == 0.5
