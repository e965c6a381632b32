"""Any other PyTorch module: TorchScript, a ``torch.export`` program (.pt2), or a pickled ``nn.Module``.

Its inputs come from ``--input`` specs (a .pt2 may omit them); its attention is declared as the
fastattn op where it can be (``nn.MultiheadAttention``, SDPA with a proven mask: see
:mod:`fastattn.families.module.declare`), and validation compares against the user's own module.
"""

from __future__ import annotations

from fastattn.errors import InputError
from fastattn.families.base import Family, ModelSource, Prepared, PrepareRequest
from fastattn.families.module.declare import declare
from fastattn.families.module.input_spec import foreign_graph
from fastattn.runtime.manifest import Arch


class ModuleFamily(Family):
    name = "module"
    description = "other PyTorch modules: TorchScript, torch.export (.pt2), pickled nn.Module (--allow-pickle)"

    def claims(self, source: ModelSource) -> bool:
        return source.path.is_file()  # the last resort: load_model says what the file is, or why not

    def prepare(self, source: ModelSource, request: PrepareRequest) -> Prepared:
        loaded = source.loaded
        if request.kv_buffer:
            raise InputError(f"--kv-buffer needs a model with a KV cache; {source.path.name} is a "
                             f"{loaded.format.value}", "export without --kv-buffer")  # fmt: skip
        graph = foreign_graph(loaded, list(request.inputs))
        declared_graph, declared = declare(graph)
        declared_graph.reference = graph.module  # validate against the user's own module, not the rewrite
        return Prepared(
            family=self.name,
            graphs=[declared_graph],
            arch=Arch.MODULE,
            source=loaded.describe(),
            notes=[*loaded.notes, declared.summary()],
        )
