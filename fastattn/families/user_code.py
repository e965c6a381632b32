"""``--code FILE.py``: the Python file that defines a pickled model's classes.

A model saved with ``torch.save(model)`` from a training script names its classes as
``__main__.Transformer``; unpickling it elsewhere fails ("Can't get attribute 'Transformer'
on <module '__main__'>"). :func:`import_code` imports FILE as a module (named after the
file, so ``train.Transformer`` resolves as well) without running it as a script: its
``if __name__ == "__main__":`` block does not run. :func:`pickle_module` then gives
``torch.load`` an unpickler that looks up classes the pickle names in ``__main__`` in that
module. Importing runs FILE's top-level code, the same trust ``--allow-pickle`` asks for,
so it is refused without it.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import sys
import types
from pathlib import Path

from fastattn.errors import InputError, LoadError

log = logging.getLogger(__name__)


def import_code(path: Path) -> types.ModuleType:
    """Import ``path`` as a module (its directory on sys.path while it imports); one line on failure."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".py":
        raise InputError(f"--code {path} is not a Python file", "pass the .py file that defines the model's classes")
    name = path.stem if path.stem.isidentifier() and path.stem not in sys.modules else f"fastattn_code_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's file may fail in any way
        del sys.modules[name]
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LoadError(f"importing --code {path} failed: {type(e).__name__}: {text}",
                        "make the file importable (its script part belongs under if __name__ == '__main__':)") from e  # fmt: skip
    finally:
        sys.path.remove(str(path.parent.resolve()))
    log.info("imported %s as module %r for unpickling", path, name)
    return module


def pickle_module(code: types.ModuleType) -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load`` whose unpickler finds ``__main__`` classes in ``code``."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if module == "__main__" and hasattr(code, name):
                module = code.__name__
            return super().find_class(module, name)

    shim = types.ModuleType("fastattn_pickle")
    shim.__dict__.update(pickle.__dict__)
    shim.Unpickler = Unpickler
    return shim
