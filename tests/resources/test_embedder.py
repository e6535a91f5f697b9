"""EmbedderResource with the real packaged all-MiniLM-L6-v2 weights (offline, CPU)."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from resources.embedder import EmbedderResource


@pytest.fixture(scope="module")
def embedder() -> EmbedderResource:
    return EmbedderResource()


def test_empty_input_needs_no_model(embedder: EmbedderResource) -> None:
    vectors = EmbedderResource().encode([])
    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32
    if "sentence_transformers" not in sys.modules:  # only provable when no other test loaded it first
        assert "torch" not in sys.modules


def test_packaged_model_identity(embedder: EmbedderResource) -> None:
    assert embedder.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert embedder.dimension == 384
    assert EmbedderResource(model="/models/custom").model_name == "/models/custom"


def test_rows_are_unit_float32(embedder: EmbedderResource) -> None:
    vectors = embedder.encode(["the agent booked a flight to Oslo", "tool call failed with a timeout", "hi"])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_paraphrase_is_closer_than_unrelated(embedder: EmbedderResource) -> None:
    query, paraphrase, unrelated = embedder.encode([
        "The user prefers window seats on long flights.",
        "On long-haul flights the customer likes to sit by the window.",
        "The quarterly tax report is due next Tuesday.",
    ])
    assert float(query @ paraphrase) > float(query @ unrelated) + 0.2


def test_auto_device_falls_back_to_cpu_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    import torch

    from resources import embedder as module

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    module._auto_device.cache_clear()
    with caplog.at_level(logging.INFO, logger=module.__name__):
        assert module._auto_device() == "cpu"
    assert "falls back to CPU" in caplog.text


def test_model_is_loaded_once_per_process(embedder: EmbedderResource) -> None:
    from resources import embedder as module

    embedder.encode(["warm"])
    loaded = dict(module._models)
    EmbedderResource(device="cpu", batch_size=8).encode(["again"])
    assert module._models == loaded


def test_a_single_string_is_rejected(embedder: EmbedderResource) -> None:
    with pytest.raises(TypeError):
        embedder.encode("not a list")  # type: ignore[arg-type]
