"""Shared fixtures. Keep this small: helpers specific to one area live in its test module."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Property tests call native code whose first call may start a thread pool: no deadlines.
settings.register_profile(
    "negmine",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("negmine")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: tests are reproducible run to run."""
    return np.random.default_rng(20240601)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised one-layer BERT saved locally as a SentenceTransformer (the
    trainer tests of test_st_trainer.py and test_st_flow.py)."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    d = tmp_path_factory.mktemp("tiny-st")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "query", "doc"]
    words += [*"abcdefghijklmnopqrstuvwxyz0123456789"]
    (d / "vocab.txt").write_text("\n".join(words) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(d / "bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    transformers.BertModel(config).save_pretrained(d / "bert")
    word = Transformer(str(d / "bert"), max_seq_length=16)
    model = SentenceTransformer(modules=[word, Pooling(16)], device="cpu")
    model.save(str(d / "st"))
    return str(d / "st")
