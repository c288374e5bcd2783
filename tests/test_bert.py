"""The BERT-style classifier's pieces: CheXbert truncation, class weights, label classes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from transformers import AutoTokenizer

from cxrlabel.io.labels import labels_schema
from cxrlabel.labelers.bert import CLASS_CODES, class_weights, encode, label_classes, packaged_encoder
from cxrlabel.observations import OBSERVATIONS
from cxrlabel.training.selection import SelectionReference


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


def test_training_keeps_the_epoch_with_the_best_validate_f1_and_stops_after_patience(tmp_path, monkeypatch):
    """Real training steps on the packaged encoder; the validate F1s are scripted so that the best
    epoch (2) is neither the first nor the last, and patience 2 stops after epoch 4 of 6."""
    import torch

    from cxrlabel.labelers import bert

    texts = ["No pneumothorax.", "Small left pleural effusion.", "Mild pulmonary edema.", "Heart size is normal."]
    labels = pl.DataFrame([{"study_id": str(i), "Edema": int(i == 2)} for i in range(4)], schema=labels_schema())
    scripted, heads = iter([0.5, 0.7, 0.6, 0.65, 0.9, 0.95]), []

    def validation_f1(model, *_):
        heads.append({k: v.clone() for k, v in model.heads.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(bert, "validation_f1", validation_f1)
    settings = bert.BertSettings(max_length=32, epochs=6, patience=2, batch_size=2, learning_rate=1e-3, head_learning_rate=1e-2, threads=1)
    stats = bert.train_bert(packaged_encoder(), (texts, labels), (texts[:2], SelectionReference(labels.head(2), "full", "silver")), str(tmp_path / "bert"), settings)
    assert (stats["epochs_run"], stats["best_epoch"], stats["validate_f1"]) == (4, 2, 0.7)
    saved = bert.BertLabeler(str(tmp_path / "bert")).model.heads.state_dict()
    assert all(torch.equal(saved[k], heads[1][k]) for k in saved) and not all(torch.equal(saved[k], heads[3][k]) for k in saved)


def test_validation_f1_is_the_mean_weighted_f1_against_the_labels():
    import torch
    from transformers import AutoModel

    from cxrlabel.labelers.bert import BertLabelerModel, BertSettings, validation_f1

    tokenizer = AutoTokenizer.from_pretrained(packaged_encoder())
    model = BertLabelerModel(AutoModel.from_pretrained(packaged_encoder()))
    labels = pl.DataFrame([{"study_id": "a", "Edema": 1}, {"study_id": "b", "Edema": 0}], schema=labels_schema())
    texts, settings = ["Edema.", "No edema."], BertSettings(max_length=32, batch_size=2)
    edema = model.heads[OBSERVATIONS.index("Edema")]
    with torch.no_grad():
        for head in model.heads:  # every head answers its class 0 (blank) whatever the report
            head.weight.zero_()
            head.bias.copy_(torch.tensor([1.0] + [0.0] * (head.bias.numel() - 1)))
        assert validation_f1(model, tokenizer, settings, texts, SelectionReference(labels, "full", "silver")) == 0.0
        edema.bias.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0]))  # Edema: positive for both reports
    # only Edema has gold labels: positive F1 2/3 (support 1), negative F1 0 (support 1)
    assert abs(validation_f1(model, tokenizer, settings, texts, SelectionReference(labels, "full", "silver")) - 1 / 3) < 1e-9
    # against positive-only labels only positive extraction is scored: Edema's positive F1 2/3
    assert abs(validation_f1(model, tokenizer, settings, texts, SelectionReference(labels, "positive_only", "expert")) - 2 / 3) < 1e-9


def test_scores_are_the_head_logits_of_the_predicted_labels(tmp_path):
    """An untrained classifier saved and loaded: labels equal predict_classes's, and each non-blank
    label's scores are its head's logits by label code, the label their argmax."""
    from transformers import AutoModel

    from cxrlabel.evaluation.calibration import confidence
    from cxrlabel.labelers.bert import BertLabeler, BertLabelerModel, BertSettings, predict_classes, save_bert

    import torch

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(packaged_encoder())
    model = BertLabelerModel(AutoModel.from_pretrained(packaged_encoder()))
    save_bert(model, tokenizer, str(tmp_path / "bert"), BertSettings(max_length=64))
    labeler = BertLabeler(str(tmp_path / "bert"), batch_size=2)
    texts = ["Mild pulmonary edema.", "No pneumothorax.", "Heart size is normal. Pacemaker in place."]
    labeled = labeler.label_batch(texts)
    encoded, _ = encode(tokenizer, texts, 64)
    classes = predict_classes(labeler.model, encoded, tokenizer.pad_token_id, 2)
    assert [[item.labels[name] for name in OBSERVATIONS] for item in labeled] == [[CLASS_CODES[c] for c in row] for row in classes.tolist()]
    scored = 0
    for item in labeled:
        stated = {name for name, code in item.labels.items() if code is not None}
        assert set(item.scores) == stated
        for name, logits in item.scores.items():
            assert list(logits) == list(CLASS_CODES[: 2 if name == "No Finding" else 4])
            assert max(logits, key=logits.get) == item.labels[name]
            assert confidence(logits, item.labels[name]) >= 1 / len(logits)
            scored += 1
    assert scored > 0


def test_the_classifier_goes_to_the_gpu_when_there_is_one_and_labels_the_same_on_the_cpu(tmp_path, monkeypatch):
    """No GPU here: CUDA is said to be available and moving the model is recorded, not done. The
    labeler and training ask for the GPU, and every tensor goes where the model is (so this CPU
    run works), its outputs coming back to the CPU: labels and scores are those of a plain run."""
    import torch
    from transformers import AutoModel

    from cxrlabel.labelers import bert

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(packaged_encoder())
    model = bert.BertLabelerModel(AutoModel.from_pretrained(packaged_encoder()))
    bert.save_bert(model, tokenizer, str(tmp_path / "bert"), bert.BertSettings(max_length=32))
    texts = ["Mild pulmonary edema.", "No pneumothorax.", "Heart size is normal. Pacemaker in place."]
    plain = bert.BertLabeler(str(tmp_path / "bert"), batch_size=2).label_batch(texts)
    moved = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bert.BertLabelerModel, "to", lambda self, device: moved.append(torch.device(device)) or self)
    labeled = bert.BertLabeler(str(tmp_path / "bert"), batch_size=2).label_batch(texts)
    assert moved == [torch.device("cuda")] and bert.device() == torch.device("cuda")
    assert [(item.labels, item.scores) for item in labeled] == [(item.labels, item.scores) for item in plain]
    labels = pl.DataFrame([{"study_id": str(i), "Edema": int(i == 0)} for i in range(3)], schema=labels_schema())
    settings = bert.BertSettings(max_length=16, epochs=1, batch_size=2, threads=1)
    bert.train_bert(packaged_encoder(), (texts, labels), (texts, SelectionReference(labels, "full", "silver")), str(tmp_path / "trained"), settings)
    assert moved == [torch.device("cuda")] * 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bert.device() == torch.device("cpu")


def test_a_sentence_unit_classifier_labels_each_sentence_and_aggregates_them_like_mentions(tmp_path):
    """The heads answer the same for every text here (biases only): a report-unit classifier gives
    each report its heads' answer, No Finding included; a sentence-unit one aggregates its sentences'
    (positive beats negative) and sets No Finding by the CheXpert rule, and a report with no sentence
    gets nothing but No Finding. Trained on sentences, it records its unit."""
    import json

    import torch
    from transformers import AutoModel

    from cxrlabel.io.labels import write_labels
    from cxrlabel.labelers.bert import SETTINGS_FILE, BertLabeler, BertLabelerModel, BertSettings, save_bert, train_bert_on_split

    tokenizer = AutoTokenizer.from_pretrained(packaged_encoder())
    model = BertLabelerModel(AutoModel.from_pretrained(packaged_encoder()))
    with torch.no_grad():
        for name, head in zip(OBSERVATIONS, model.heads):
            head.weight.zero_()
            wanted = {"No Finding": 1, "Edema": 1, "Pneumothorax": 2}.get(name, 0)  # class indices: positive, negative
            head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(wanted), head.bias.numel()).float())
    texts = ["Mild edema. No pneumothorax.", ""]
    for unit in ("report", "sentence"):
        save_bert(model, tokenizer, str(tmp_path / unit), BertSettings(max_length=32, unit=unit))
    by_report, by_sentence = (BertLabeler(str(tmp_path / unit), batch_size=2).label_batch(texts) for unit in ("report", "sentence"))
    stated = lambda item: {k: v for k, v in item.labels.items() if v is not None}  # noqa: E731
    assert stated(by_report[0]) == {"No Finding": 1, "Edema": 1, "Pneumothorax": 0}
    assert stated(by_sentence[0]) == {"Edema": 1, "Pneumothorax": 0} and set(by_sentence[0].scores) == {"Edema", "Pneumothorax"}
    assert stated(by_sentence[1]) == {"No Finding": 1}

    reports = pl.DataFrame({"study_id": ["a", "b", "v"], "split": ["train", "train", "validate"], "text": ["Mild edema. No pneumothorax.", "Small effusion.", "Edema."]})
    reports.write_parquet(tmp_path / "reports.parquet")
    labels = pl.DataFrame([{"study_id": "a", "Edema": 1, "Pneumothorax": 0}, {"study_id": "b", "Pleural Effusion": 1}, {"study_id": "v", "Edema": 1}], schema=labels_schema())
    write_labels(labels, tmp_path / "silver.parquet", "full")
    settings = BertSettings(max_length=32, epochs=1, batch_size=2, threads=1, unit="sentence")
    stats = train_bert_on_split(None, str(tmp_path / "reports.parquet"), str(tmp_path / "silver.parquet"), str(tmp_path / "trained"), settings)
    assert stats["epochs_run"] == 1 and json.loads((tmp_path / "trained" / SETTINGS_FILE).read_text())["unit"] == "sentence"
