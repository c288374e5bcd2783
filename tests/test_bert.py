"""The BERT-style classifier's pieces: CheXbert truncation, class weights, label classes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from transformers import AutoTokenizer

from cxrlabel.io.labels import labels_schema
from cxrlabel.labelers.bert import CLASS_CODES, class_weights, encode, label_classes, packaged_encoder
from cxrlabel.observations import OBSERVATIONS


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(packaged_encoder())


def test_long_reports_are_cut_at_512_like_chexbert_and_flagged(tokenizer):
    texts = ["No pneumothorax.", "There is a small effusion. " * 120]
    ids, cut = encode(tokenizer, texts, 512)
    assert cut == [False, True] and len(ids[1]) == 512
    assert ids == tokenizer(texts, truncation=True, max_length=512)["input_ids"]
    assert ids[1][-1] == tokenizer.sep_token_id


def test_label_classes_and_inverse_frequency_weights():
    labels = pl.DataFrame([{"study_id": "a", "Edema": 1}, {"study_id": "b", "Edema": 1}, {"study_id": "c", "Edema": 0}, {"study_id": "d"}], schema=labels_schema())
    classes = label_classes(labels)
    edema = OBSERVATIONS.index("Edema")
    assert [CLASS_CODES[c] for c in classes[:, edema]] == [1, 1, 0, None]
    weights = class_weights(classes)[edema].numpy()
    # counts blank 1, positive 2, negative 1, uncertain 0 -> total / count / 4; unseen class 1
    assert np.allclose(weights, [1.0, 0.5, 1.0, 1.0])
    assert len(class_weights(classes)[OBSERVATIONS.index("No Finding")]) == 2
