"""The stdlib corpus: a deterministic split by file with no overlap, and a stable identity."""

from __future__ import annotations

from fastattn.train import corpus
from fastattn.train.tasks import CLASSES


def test_split_by_file_has_no_overlap():
    c = corpus.load()
    train, heldout = {d.path for d in c.train}, {d.path for d in c.heldout}
    assert train.isdisjoint(heldout)
    assert all(corpus.is_heldout(p) for p in heldout) and not any(corpus.is_heldout(p) for p in train)
    assert 0.10 < len(heldout) / (len(train) + len(heldout)) < 0.20  # HELDOUT_FRACTION = 0.15
    assert len(train) > 500


def test_corpus_is_sorted_and_excludes_site_packages():
    c = corpus.load()
    paths = [d.path for d in c.train]
    assert paths == sorted(paths)
    assert not any("site-packages" in p for p in paths)


def test_split_depends_only_on_the_path():
    assert corpus.is_heldout("asyncio/events.py") == corpus.is_heldout("asyncio/events.py")
    flags = [corpus.is_heldout(f"pkg/module_{i}.py") for i in range(2000)]
    assert 0.12 < sum(flags) / len(flags) < 0.18


def test_identity_is_stable():
    assert corpus.identity() == corpus.identity() == corpus.load().identity
    assert len(corpus.identity()) == 16


def test_every_classifier_package_has_training_and_held_out_files():
    c = corpus.load()
    for package in CLASSES:
        assert sum(d.package == package for d in c.heldout) >= 3, package
        assert sum(d.package == package for d in c.train) >= 10, package
