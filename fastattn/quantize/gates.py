"""Accuracy gates: how much a quantized model may lose against the float ONNX model it came from.

    language models, encoder-decoders   perplexity increase (relative)
    classifiers                         accuracy drop (absolute) and output cosine
    encoders without a head             output cosine (Hugging Face feature extraction: the mean
                                        per-sample cosine of mean-pooled embeddings)

A gate is checked on the evaluation set (held-out data of a trained model, the user's own
data, or random samples — the report says which). Failing it is an error unless the user
relaxes the gate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from fastattn.quantize.accuracy import Task
from fastattn.runtime.records import Figures, GateRecord


@dataclass(frozen=True)
class Gate:
    max_ppl_increase: float  # relative: 0.01 = perplexity may grow by 1%
    min_cosine: float  # of the main output with the float model
    max_accuracy_drop: float  # absolute: 0.01 = one point of accuracy

    def failures(self, task: Task, base: Figures, got: Figures) -> list[str]:
        """What fails, each with its figures (empty: the gate passes)."""
        out = []
        if task is Task.LM:
            if base.perplexity and got.perplexity is not None:
                rise = got.perplexity / base.perplexity - 1
                if rise > self.max_ppl_increase:
                    out.append(f"perplexity {base.perplexity:.6g} -> {got.perplexity:.6g} ({rise:+.2%}, "
                               f"gate {self.max_ppl_increase:+.2%})")  # fmt: skip
            return out
        if got.cosine is not None and got.cosine < self.min_cosine:
            out.append(f"output cosine {got.cosine:.5f} < {self.min_cosine}")
        if task is Task.CLASSIFIER and base.accuracy is not None and got.accuracy is not None:
            drop = base.accuracy - got.accuracy
            if drop > self.max_accuracy_drop:
                out.append(f"accuracy {base.accuracy:.2%} -> {got.accuracy:.2%} (gate -{self.max_accuracy_drop:.2%})")
        return out

    def badness(self, task: Task, base: Figures, got: Figures) -> float:
        """How far ``got`` is from ``base``, as a fraction of what the gate allows (> 1 fails)."""
        if task is Task.LM and base.perplexity and got.perplexity is not None:
            return (got.perplexity / base.perplexity - 1) / self.max_ppl_increase
        worst = (1 - (got.cosine if got.cosine is not None else 1.0)) / max(1 - self.min_cosine, 1e-12)
        if task is Task.CLASSIFIER and base.accuracy is not None and got.accuracy is not None:
            worst = max(worst, (base.accuracy - got.accuracy) / max(self.max_accuracy_drop, 1e-12))
        return worst

    def relaxed(self, max_ppl_increase: float | None, min_cosine: float | None,
                max_accuracy_drop: float | None) -> Gate:  # fmt: skip
        changes = {k: v for k, v in (("max_ppl_increase", max_ppl_increase), ("min_cosine", min_cosine),
                                     ("max_accuracy_drop", max_accuracy_drop)) if v is not None}  # fmt: skip
        return replace(self, **changes)

    def record(self) -> GateRecord:
        return GateRecord(**asdict(self))


INT8_GATE = Gate(max_ppl_increase=0.01, min_cosine=0.999, max_accuracy_drop=0.01)
