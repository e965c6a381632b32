"""How many of each fusion a fastattn model should get, from its :class:`ModelConfig`.

Counted per graph (an encoder-decoder has two: ``encoder`` and ``decoder``), per stack of
L layers, c = 1 when the layers have cross-attention (the seq2seq decoder):

- norms: L·(2 + c) residual norms, plus the final norm of a pre-LN stack; all of them are
  ``layer_norm`` or ``rms_norm`` by the config's norm;
- skip norms: every norm whose input is a residual Add. Post-LN: all L·(2 + c). Pre-LN:
  all but the first, whose input is the token embedding; with learned positions that
  input is ``tokens + positions``, an Add like any residual, and fuses too (decoder
  positions are computed at (B, S) from the mask, so both operands are (B, S, D));
- an embedding norm (``embedding_norm``) is one more norm in each graph that embeds tokens;
  its input is ``tokens + positions`` with learned positions (a skip norm then), and a
  pre-LN stack's first norm then takes the embedding norm's output (not an Add);
- ``gelu`` and ``bias_gelu``: one per layer with a GELU FFN (``bias_gelu`` only with
  FFN biases); ``fast_gelu``: one per layer with the tanh approximation (``gelu_tanh``);
- ``rotary``: two per layer with rotary positions (queries and keys of self-attention;
  cross-attention is not rotated);
- ``packed_qkv``: one per self-attention layer.
"""

from __future__ import annotations

from fastattn.models.config import Activation, Arch, ModelConfig, Norm, NormPosition, Positions


def expected_counts(config: ModelConfig, graph: str | None = None) -> dict[str, int]:
    """Expected count per fusion rule for one graph of ``config``'s model.

    ``graph`` names the graph of an encoder-decoder (``"encoder"`` or ``"decoder"``, the
    names :func:`fastattn.families.fastattn.graphs.model_graphs` gives); other models have
    one graph and take ``None`` or ``"model"``.
    """
    layers, cross, _ = _stack(config, graph)
    pre = config.norm_position is NormPosition.PRE
    embedding_add = config.positions is Positions.LEARNED
    embedding_norm = 1 if config.embedding_norm and layers else 0
    norms = layers * (2 + cross) + (1 if pre and layers else 0) + embedding_norm
    first_is_add = embedding_add and not embedding_norm  # the input of a pre-LN stack's first norm
    skip = norms - (1 if pre and layers and not first_is_add else 0) - (embedding_norm if not embedding_add else 0)
    rms = config.norm is Norm.RMS
    gelu = layers if config.activation is Activation.GELU else 0
    return {
        "layer_norm": 0 if rms else norms,
        "rms_norm": norms if rms else 0,
        "skip_layer_norm": 0 if rms else skip,
        "skip_rms_norm": skip if rms else 0,
        "gelu": gelu,
        "fast_gelu": layers if config.activation is Activation.GELU_TANH else 0,
        "bias_gelu": gelu if config.biases[2] else 0,
        "rotary": 2 * layers if config.positions is Positions.ROTARY else 0,
        "packed_qkv": layers,
    }


def _stack(config: ModelConfig, graph: str | None) -> tuple[int, int, bool]:
    """(layers, 1 if cross-attention else 0, causal) of the stack in ``graph``."""
    if config.arch is Arch.ENCODER_DECODER:
        if graph == "encoder":
            return len(config.encoder_layers), 0, False
        if graph == "decoder":
            return len(config.decoder_layers), 1, True
        raise ValueError(f"an encoder-decoder has graphs 'encoder' and 'decoder', not {graph!r}")
    if graph not in (None, "model"):
        raise ValueError(f"a {config.arch.value} model has one graph, 'model', not {graph!r}")
    if config.arch is Arch.ENCODER:
        return len(config.encoder_layers), 0, False
    return len(config.decoder_layers), 0, True
