"""Standard-library code search: docstring queries, sources without docstrings, dedup and the split by module."""

from paperzoo.core.lm.data import Document, stdlib_sources
from paperzoo.retrieval.data.codesearch import (
    build_stdlib_code_search,
    collect_functions,
    module_functions,
    module_name,
    stdlib_code_search,
)
from paperzoo.retrieval.data.splits import splits_to_json

SOURCE = '''
import os


def area(width, height):
    """Return the area of a rectangle.

    Longer explanation that is not part of the query.
    """

    return width * height


class Shape:
    @property
    def name(self):
        """The   name of
        this shape, in lower case."""
        return type(self).__name__.lower()

    def abstract(self):
        """Subclasses must implement this method."""
        raise NotImplementedError

    def short(self):
        """Too short."""
        return 1


def undocumented():
    return 2
'''


def test_docstring_becomes_the_query_and_leaves_the_code():
    functions = {f.doc_id: f for f in module_functions(Document("geometry/shapes.py", SOURCE))}
    assert set(functions) == {"geometry.shapes:area", "geometry.shapes:Shape.name"}  # stubs, short, undocumented
    area = functions["geometry.shapes:area"]
    assert area.docstring == "Return the area of a rectangle."
    assert area.code == "def area(width, height):\n    return width * height"
    name = functions["geometry.shapes:Shape.name"]
    assert name.docstring == "The name of this shape, in lower case."
    assert name.code == "def name(self):\n    return type(self).__name__.lower()"  # dedented, decorator left out
    assert name.module == "geometry.shapes"
    assert module_name("json/__init__.py") == "json" and module_name("os.py") == "os"


FUNCTION = 'def {}(x):\n    """{}"""\n    return {}\n\n'


def test_shared_docstrings_duplicate_code_and_quoted_docstrings_are_dropped():
    one = Document(
        "a.py", FUNCTION.format("f", "Add one to x.", "x + 1") + FUNCTION.format("g", "Twice the value x.", "2 * x")
    )
    two = Document(
        "b.py", FUNCTION.format("h", "Add one to x.", "x + 1") + FUNCTION.format("g", "Double it, as g.", "2 * x")
    )
    quoting = Document("c.py", FUNCTION.format("q", "Find a quote in x.", '"Twice the value x." in x'))
    kept = {f.doc_id for f in collect_functions([one, two, quoting])}
    # f/h share a docstring (ambiguous); b's g has a's g's code (kept once); a's g's docstring is quoted in q.
    assert kept == {"c:q"}


def test_real_stdlib_splits_are_by_module_disjoint_and_deterministic():
    documents = stdlib_sources()[:40]
    splits = build_stdlib_code_search(documents, seed=1)
    parts = [splits.train, splits.dev, splits.test]
    assert all(len(p.queries) > 0 for p in parts)
    for i, a in enumerate(parts):
        assert all(a.qrels[qid] == {qid: 1} for qid in a.queries)
        for b in parts[i + 1 :]:
            assert not set(a.groups.values()) & set(b.groups.values())
            assert not set(a.corpus.values()) & set(b.corpus.values())
            assert not set(a.queries.values()) & set(b.queries.values())
    everything = "\n".join(t for p in parts for t in p.corpus.values())
    assert not [q for p in parts for q in p.queries.values() if q in everything]
    assert splits_to_json(build_stdlib_code_search(documents, seed=1)) == splits_to_json(splits)
    assert splits_to_json(stdlib_code_search(seed=1, max_modules=40)) == splits_to_json(splits)  # cached = built
