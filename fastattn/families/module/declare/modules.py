"""The nn.Module route: ``nn.MultiheadAttention`` replaced by one that calls the fastattn op.

The mask kind of each module (none, causal, key padding) is decided by one eager run on
the sample inputs (:func:`classify_masks`) and frozen for the export; ``nn.TransformerEncoder``
/ ``Decoder`` get an explicit ``is_causal`` hint so torch's data-dependent check is not traced.
"""

from __future__ import annotations

import copy
import inspect
import logging
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fastattn.attention.op import attention
from fastattn.attention.spec import AttentionSpec
from fastattn.errors import ExportError
from fastattn.families.graphs import mha_fastpath
from fastattn.families.module.declare.masks import BLOCK
from fastattn.families.module.declare.result import DeclareResult, first_line

log = logging.getLogger(__name__)


class DeclaredMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` computed by the fastattn op, holding the original's parameters.

    ``causal`` is decided by an eager run (:func:`declare_modules`); until then, and for a
    module that could not be declared (``reason`` set), it computes as PyTorch's own.
    Attention weights are never computed: the second output is always ``None``.
    """

    def __init__(self, original: nn.MultiheadAttention, name: str) -> None:
        nn.Module.__init__(self)
        for key, value in vars(original).items():  # same tensors and submodules, own containers
            self.__dict__[key] = copy.copy(value) if isinstance(value, (dict, set)) else value
        self.qualified_name = name
        self.recording = False
        self.causal: bool | None = None
        self.reason: str | None = _unsupported_features(original)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not torch.compiler.is_compiling() and self.reason is None:
            self._observe(query, key, attn_mask, is_causal, key_padding_mask)
        if self.causal is None:  # not (yet) declared: PyTorch's own attention
            return super().forward(
                query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
            )
        return self._attend(query, key, value, key_padding_mask, self.causal), None

    def _observe(self, query, key, attn_mask, is_causal, key_padding_mask) -> None:
        """Record (while recording) or check (afterwards) the kind of mask of an eager call."""
        seq_axis = 1 if self.batch_first and query.dim() == 3 else 0
        causal, why = classify_masks(
            attn_mask, is_causal, key_padding_mask, query.shape[seq_axis], key.shape[seq_axis]
        )
        if not self.recording:
            if self.causal is not None and (why or causal != self.causal):
                raise ExportError(
                    f"attention {self.qualified_name} was declared {'causal' if self.causal else 'unmasked'} "
                    f"but is now called with {why or ('a causal' if causal else 'no') + ' mask'}",
                    "call it with the same kind of mask as the sample inputs",
                )
            return
        if why is None and self.causal is not None and causal != self.causal:
            why = "called both with and without a causal mask"
        self.reason, self.causal = (why, None) if why else (None, causal)

    def _attend(self, query, key, value, key_padding_mask, causal: bool) -> torch.Tensor:
        batched = query.dim() == 3
        self_attention = query is key and key is value
        query, key, value = (self._batch_first(x, batched) for x in (query, key, value))
        q, k, v = self._project(query, key, value, self_attention)
        key_mask = None
        if key_padding_mask is not None:
            kpm = key_padding_mask if batched else key_padding_mask.unsqueeze(0)
            key_mask = kpm.logical_not() if kpm.dtype == torch.bool else kpm > BLOCK
        spec = AttentionSpec(self.num_heads, self.num_heads, causal)
        out, _ = attention(q, k, v, spec, key_mask=key_mask)
        out = F.linear(out, self.out_proj.weight, self.out_proj.bias)
        if not batched:
            return out.squeeze(0)
        return out if self.batch_first else out.transpose(0, 1)

    def _batch_first(self, x: torch.Tensor, batched: bool) -> torch.Tensor:
        if not batched:
            return x.unsqueeze(0)
        return x if self.batch_first else x.transpose(0, 1)

    def _project(self, query, key, value, self_attention: bool) -> tuple[torch.Tensor, ...]:
        if self._qkv_same_embed_dim and self_attention:  # one packed projection
            return tuple(F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1))
        if self._qkv_same_embed_dim:
            weights = self.in_proj_weight.chunk(3)
        else:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        biases = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        return tuple(F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases))


def _unsupported_features(mha: nn.MultiheadAttention) -> str | None:
    if mha.bias_k is not None or mha.bias_v is not None:
        return "add_bias_kv=True (bias_k/bias_v append a learned key) is not supported by the fastattn op"
    if mha.add_zero_attn:
        return "add_zero_attn=True (an appended zero key) is not supported by the fastattn op"
    return None


def classify_masks(
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    key_padding_mask: torch.Tensor | None,
    query_len: int,
    key_len: int,
) -> tuple[bool, str | None]:
    """``(causal, None)`` when the masks are expressible by the op, else ``(False, reason)``.

    ``attn_mask`` may be bool (True = blocked) or float (0 / -inf); it must be empty or
    causal. A float ``key_padding_mask`` must hold only 0 and -inf. Any value <= ``BLOCK``
    counts as -inf: its softmax weight underflows to exactly 0.
    """
    padding = key_padding_mask
    if (
        padding is not None
        and padding.dtype != torch.bool
        and not ((padding == 0) | (padding <= BLOCK)).all()
    ):
        return False, "key_padding_mask adds a bias (values other than 0 and -inf)"
    causal = bool(is_causal) and attn_mask is None
    if attn_mask is not None:
        blocked = attn_mask if attn_mask.dtype == torch.bool else attn_mask <= BLOCK
        if attn_mask.dtype != torch.bool and not ((attn_mask == 0) | blocked).all():
            return False, "attn_mask adds a bias (values other than 0 and -inf)"
        upper = torch.ones(query_len, key_len, dtype=torch.bool, device=blocked.device).triu(1)
        causal = bool(blocked.any())
        if causal and not bool((blocked == upper).all()):
            return False, "attn_mask is neither empty nor causal"
    if causal and query_len != key_len:
        return False, "causal attention with query length != key length (PyTorch aligns it top-left)"
    return causal, None


class _CausalHint:
    """Forward pre-hook of ``nn.TransformerEncoder/Decoder``: give an explicit ``is_causal`` hint.

    Without it, torch compares the mask with a causal one (``_detect_is_causal_mask``), a
    data-dependent branch that torch.export cannot trace. The hint is the kind of mask
    recorded on the sample inputs; eager calls outside recording are left alone.
    """

    PARAMS: ClassVar[dict[type, tuple[str, str]]] = {
        nn.TransformerEncoder: ("mask", "is_causal"),
        nn.TransformerDecoder: ("tgt_mask", "tgt_is_causal"),
    }

    def __init__(self, module: nn.Module) -> None:
        self.mask_param, self.hint_param = self.PARAMS[type(module)]
        self.signature = inspect.signature(module.forward)
        self.recording = False
        self.causal: bool | None = None

    @classmethod
    def install(cls, module: nn.Module) -> _CausalHint:
        hint = cls(module)
        module.register_forward_pre_hook(hint, with_kwargs=True)
        return hint

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        bound = self.signature.bind(*args, **kwargs)
        mask = bound.arguments.get(self.mask_param)
        if mask is None or bound.arguments.get(self.hint_param) is not None:
            return None
        if self.recording:
            causal, why = classify_masks(mask if mask.dim() == 2 else mask[0], False, None, *mask.shape[-2:])
            self.causal = causal and why is None
            return None
        if self.causal is None or not torch.compiler.is_compiling():
            return None
        bound.arguments[self.hint_param] = self.causal
        return bound.args, bound.kwargs


def declare_modules(module: nn.Module, sample_args: tuple, strict: bool = True) -> DeclareResult:
    """Declare every ``nn.MultiheadAttention`` of ``module`` (in a parameter-sharing copy).

    The copy is run once on ``sample_args`` to decide each module's mask. With ``strict``,
    a module that cannot be declared is an :class:`ExportError` naming it and the fix.
    """
    names = [n for n, m in module.named_modules() if isinstance(m, nn.MultiheadAttention)]
    if not names:
        return DeclareResult(module, 0, [])
    declared_model = _structural_copy(module)
    attn = [_replace(declared_model, name) for name in names]
    hints = [_CausalHint.install(m) for m in declared_model.modules() if type(m) in _CausalHint.PARAMS]
    _record(declared_model, sample_args, attn, hints)
    reasons = [
        f"{m.qualified_name}: {m.reason or 'not called on the sample inputs'}"
        for m in attn
        if m.causal is None
    ]
    if reasons and strict:
        raise ExportError(
            f"attention {reasons[0]}",
            "give it no mask or a causal one (nn.Transformer.generate_square_subsequent_mask) and pass "
            "padding as key_padding_mask; or declare with strict=False to leave it decomposed",
        )
    return DeclareResult(declared_model, len(attn) - len(reasons), reasons)


def _structural_copy(module: nn.Module) -> nn.Module:
    """A copy of the module tree sharing every parameter and buffer, so the original stays as it was."""
    shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
    try:
        return copy.deepcopy(module, memo=shared).eval()
    except Exception as e:  # noqa: BLE001  (arbitrary user modules may refuse to be copied)
        log.warning("could not copy the model (%s); declaring its attention in place", first_line(e))
        return module.eval()


def _replace(root: nn.Module, name: str) -> DeclaredMultiheadAttention:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name)
    declared = DeclaredMultiheadAttention(getattr(parent, child), name)
    setattr(parent, child, declared)
    return declared


def _record(
    model: nn.Module, args: tuple, attn: list[DeclaredMultiheadAttention], hints: list[_CausalHint]
) -> None:
    """Run ``model`` once with recording on: each attention decides its (frozen) mask kind."""
    for item in (*attn, *hints):
        item.recording = True
    try:
        with torch.no_grad(), mha_fastpath(False):
            model(*args)
    except ExportError:
        raise
    except Exception as e:  # the model's own code fails on a declared attention
        raise ExportError(
            f"the model failed on its sample inputs once attention was declared: {first_line(e)}",
            "fastattn returns no attention weights; a model that uses need_weights=True cannot be declared",
        ) from e
    finally:
        for item in (*attn, *hints):
            item.recording = False
