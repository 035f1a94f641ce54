"""`paperzoo run index`: the build-save-load-search pipeline against brute force, and its argument checks."""

import json
import os

import pytest
import torch

import paperzoo.core.card as card_module
from paperzoo.core.cli import main
from paperzoo.core.errors import ConfigError
from paperzoo.retrieval.data.module import RetrievalDataModule
from paperzoo.retrieval.encoder import MiniLMEncoder
from paperzoo.retrieval.index.card import CARD
from paperzoo.retrieval.index.run import build_and_search, encode_texts
from paperzoo.retrieval.metrics import retrieval_metrics

# a 1-layer random MiniLM over the test split of 3 Wikipedia articles: seconds, and the ranking math is the same
TINY = {"source": "wikipedia", "max_documents": 3, "pretrained": False, "num_layers": 1, "max_doc_length": 32}


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("index")
    return build_and_search(**TINY, kind="flat", output_dir=str(out)), out


def test_flat_run_equals_brute_force_cosine_search(flat_run):
    result, out = flat_run
    benchmark = RetrievalDataModule(source="wikipedia", max_documents=3).splits.test
    torch.manual_seed(0)  # the run builds its random encoder from seed=0
    encoder = MiniLMEncoder(trainable_layers=0, pretrained=False, num_layers=1)
    docs = encode_texts(encoder, list(benchmark.corpus.values()), 32)
    queries = encode_texts(encoder, list(benchmark.queries.values()), 32)
    scores = queries @ docs.T  # [Q, N] cosine: encode_texts returns unit vectors
    top = scores.topk(min(100, scores.shape[1]), dim=1)
    kept = torch.full_like(scores, float("-inf")).scatter(1, top.indices, top.values)
    expected = retrieval_metrics(kept, benchmark.relevance(), recall_at=(10, 100))
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-4), name
    assert result["documents"] == len(benchmark.corpus) and result["queries"] == len(benchmark.queries)
    assert torch.allclose(docs.norm(dim=1), torch.ones(len(docs)))


def test_run_writes_the_index_and_its_figures(flat_run):
    result, out = flat_run
    assert result["bytes_on_disk"] == os.path.getsize(result["index"]) > 384 * 4 * result["documents"]
    assert json.loads((out / "wikipedia_test_flat.json").read_text()) == result
    assert result["queries_per_s"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["wikipedia_test_flat.index", "wikipedia_test_flat.json"]


def test_hnsw_run_matches_flat_on_a_small_corpus(flat_run, tmp_path):
    # a few dozen passages: the HNSW search (efSearch >= k) visits the whole graph and is exact
    result = build_and_search(**TINY, kind="hnsw", output_dir=str(tmp_path))
    for name in ("ndcg@10", "mrr@10", "recall@10", "recall@100"):
        assert result[name] == pytest.approx(flat_run[0][name], abs=1e-4), name


def test_run_on_a_beir_directory_with_only_test_qrels(tmp_path):
    beir = tmp_path / "toy"
    (beir / "qrels").mkdir(parents=True)
    docs = {f"d{i}": f"passage number {i} about topic {i % 5}" for i in range(30)}
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "Toy", "text": v}) + "\n" for k, v in docs.items())
    )
    (beir / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": f"topic {i}"}) + "\n" for i in range(5))
    )
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(5))
    )
    out = tmp_path / "out"
    result = build_and_search(
        path=str(beir), kind="ivf", nlist=4, nprobe=4, pretrained=False, num_layers=1, output_dir=str(out)
    )
    assert (result["documents"], result["queries"], result["nlist"]) == (30, 5, 4)
    assert result["recall@100"] == 1.0  # all 30 documents are retrieved when every list is probed
    assert (out / "toy_test_ivf.index").is_file()


def test_encode_texts_keeps_the_order_of_its_input():
    torch.manual_seed(0)
    encoder = MiniLMEncoder(trainable_layers=0, pretrained=False, num_layers=1)
    texts = ["a much longer text about retrieval with faiss indexes", "short", "a medium text here"]
    together = encode_texts(encoder, texts, 32, batch_size=2)
    one_by_one = torch.cat([encode_texts(encoder, [text], 32) for text in texts])
    torch.testing.assert_close(together, one_by_one, rtol=0, atol=1e-5)


def test_bad_arguments_fail_before_any_work(monkeypatch, tmp_path):
    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder was built before the arguments were checked")

    monkeypatch.setattr("paperzoo.retrieval.index.run.MiniLMEncoder", no_encoder)
    with pytest.raises(ConfigError, match="flat, ivf, hnsw"):
        build_and_search(**TINY, kind="annoy")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="top_k"):
        build_and_search(**TINY, top_k=5)
    with pytest.raises(ConfigError, match="nprobe"):
        build_and_search(**TINY, kind="ivf", nprobe=0)
    with pytest.raises(ConfigError, match="nlist=100000"):
        build_and_search(**TINY, kind="ivf", nlist=100000, output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="max_doc_length"):
        build_and_search(**{**TINY, "max_doc_length": 1})
    with pytest.raises(ConfigError, match="unknown source"):
        build_and_search(source="wikipedai")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        build_and_search(**TINY, output_dir=str(tmp_path / "file"))


@pytest.fixture
def index_card(monkeypatch):
    monkeypatch.setattr(card_module, "discover_cards", lambda: {"index": CARD})


def test_cli_resolves_packaged_configs_and_reports_mistakes_in_one_sentence(index_card, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "index", "--config", "index/tiny", "--kind", "annoy"])
    assert exit_.value.code == 2
    assert "kind" in capsys.readouterr().err.strip().splitlines()[-1]
    assert set(CARD.configs()) >= {"tiny", "flat_wikipedia", "hnsw_wikipedia", "ivf_wikipedia"}
    main(["run", "index", "--config", "index/tiny", "--pretrained=false", "--num_layers=1", f"--output_dir={tmp_path}"])
    assert capsys.readouterr().out.splitlines()[0].split()[0] == "ndcg@10"  # one figure per line
    assert (tmp_path / "wikipedia_test_flat.index").is_file()
