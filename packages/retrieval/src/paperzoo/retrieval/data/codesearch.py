"""Code search over Python's standard library: a function's docstring retrieves the function.

The task of CodeSearchNet (Husain et al., "CodeSearchNet Challenge: Evaluating the State of Semantic Code Search",
arXiv:1909.09436), built offline from this Python's own standard library (`paperzoo.core.lm.data.stdlib_sources`):
the query is the first paragraph of a function's docstring, the document is the function's source with the
docstring removed (methods included, dedented; decorators left out), and the split is by module, so no module's
code is in two splits. `groups` maps each function to its dotted module name.

As in CodeSearchNet, functions are kept only if the docstring's first paragraph has at least `MIN_QUERY_WORDS`
words and the body is more than a stub (`pass`, `...`, a lone `raise`). Docstrings shared by several functions
(ambiguous queries such as "Return self==value.") are dropped, identical functions are kept once, and a docstring
that appears verbatim in any kept function (a comment or string quoting it) is dropped too.
"""

import ast
import textwrap
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from paperzoo.core.errors import require
from paperzoo.core.lm.data import Document, stdlib_sources
from paperzoo.retrieval.data.benchmark import BenchmarkSplits, RetrievalBenchmark
from paperzoo.retrieval.data.splits import (
    cached_splits,
    check_fractions,
    documents_digest,
    occurring,
    split_by_group,
)

CODE_VERSION = 1
MIN_QUERY_WORDS = 3


@dataclass(frozen=True)
class Function:
    doc_id: str  # "<module>:<qualified name>"
    module: str
    docstring: str  # the first paragraph, on one line
    code: str  # the source without its docstring


def module_name(path: str) -> str:
    """ "json/decoder.py" -> "json.decoder"; "json/__init__.py" -> "json"."""
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def first_paragraph(docstring: str) -> str:
    return " ".join(docstring.strip().split("\n\n")[0].split())


def is_stub(body: Sequence[ast.stmt]) -> bool:
    """A body (after the docstring) that does nothing worth retrieving: empty, `pass`, `...` or one `raise`."""
    if not body:
        return True
    if len(body) > 1:
        return False
    (statement,) = body
    is_ellipsis = isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
    return isinstance(statement, ast.Pass | ast.Raise) or is_ellipsis


def without_docstring(source: str, node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The function's source, dedented, with the docstring statement's lines cut out (decorators excluded)."""
    lines = source.splitlines()
    docstring = node.body[0]
    assert docstring.end_lineno is not None and node.end_lineno is not None
    body = lines[docstring.end_lineno : node.end_lineno]
    while body and not body[0].strip():  # the blank line that usually follows a docstring
        body = body[1:]
    kept = lines[node.lineno - 1 : docstring.lineno - 1] + body
    return textwrap.dedent("\n".join(kept)).strip("\n")


def module_functions(document: Document) -> Iterator[Function]:
    """Every function and method with a docstring and a real body in one module, in source order."""
    try:
        tree = ast.parse(document.text)
    except SyntaxError:  # a stdlib file written for another Python version (lib2to3 test data and the like)
        return
    module = module_name(document.title)

    def visit(node: ast.AST, prefix: str) -> Iterator[Function]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                docstring = ast.get_docstring(child)
                query = first_paragraph(docstring or "")
                on_own_lines = child.body[0].lineno > child.lineno  # not `def f(): "doc"` on one line
                if len(query.split()) >= MIN_QUERY_WORDS and on_own_lines and not is_stub(child.body[1:]):
                    code = without_docstring(document.text, child)
                    yield Function(f"{module}:{prefix}{child.name}", module, query, code)
                # Nested functions are part of their parent's document, not documents of their own.

    yield from visit(tree, "")


def collect_functions(documents: Sequence[Document]) -> list[Function]:
    """All modules' functions, with ambiguous docstrings, duplicate functions and leaked docstrings removed."""
    functions = [f for document in documents for f in module_functions(document)]
    docstring_counts = Counter(f.docstring for f in functions)
    seen_ids: set[str] = set()
    seen_code: set[str] = set()
    unique = []
    for function in functions:
        if docstring_counts[function.docstring] > 1 or function.doc_id in seen_ids or function.code in seen_code:
            continue
        seen_ids.add(function.doc_id)
        seen_code.add(function.code)
        unique.append(function)
    leaked = occurring([f.docstring for f in unique], [f.code for f in unique])
    return [f for f in unique if f.docstring not in leaked]


def functions_benchmark(name: str, functions: Sequence[Function]) -> RetrievalBenchmark:
    return RetrievalBenchmark(
        name,
        corpus={f.doc_id: f.code for f in functions},
        queries={f.doc_id: f.docstring for f in functions},  # the query shares its function's id
        qrels={f.doc_id: {f.doc_id: 1} for f in functions},
        groups={f.doc_id: f.module for f in functions},
    )


def build_stdlib_code_search(
    documents: Sequence[Document],
    seed: int = 0,
    dev_fraction: float = 0.15,
    test_fraction: float = 0.15,
    name: str = "stdlib",
) -> BenchmarkSplits:
    """The benchmark of `stdlib_code_search` from any list of Python modules (title = path, text = source)."""
    check_fractions(dev_fraction, test_fraction)
    parts = split_by_group(collect_functions(documents), lambda f: f.module, dev_fraction, test_fraction, seed)
    return BenchmarkSplits(**{split: functions_benchmark(f"{name}/{split}", parts[split]) for split in parts})


def stdlib_code_search(
    seed: int = 0, dev_fraction: float = 0.15, test_fraction: float = 0.15, max_modules: int | None = None
) -> BenchmarkSplits:
    """Docstring -> function retrieval over the standard library, split by module (cached; see the module doc).

    Args:
        seed: seeds the assignment of modules to splits.
        dev_fraction, test_fraction: the share of functions (in whole modules) in dev and test.
        max_modules: use only the first N modules (sorted by path; tiny runs); at least 3.

    Returns:
        train/dev/test `RetrievalBenchmark`s named "stdlib/<split>"; each query judges one function;
        `groups` maps functions to module names.
    """
    require(max_modules is None or max_modules >= 3, f"max_modules must be at least 3, got {max_modules}")
    check_fractions(dev_fraction, test_fraction)
    documents = stdlib_sources()[:max_modules]
    key = {
        "seed": seed,
        "dev_fraction": dev_fraction,
        "test_fraction": test_fraction,
        "version": CODE_VERSION,
        "source": documents_digest(documents),
    }
    return cached_splits("stdlib", key, lambda: build_stdlib_code_search(documents, seed, dev_fraction, test_fraction))
