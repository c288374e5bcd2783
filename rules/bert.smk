rule bert_train:
    """Fine-tune the BERT-style classifier (encoder + 14 heads) on the training labels; models/bert_silver is the first of two stages."""
    input:
        unpack(lambda wildcards: trainer_inputs(wildcards, "bert")),
    output:
        directory(results("models/{bert_model}")),
    log:
        logs("{bert_model}"),
    benchmark:
        bench("{bert_model}")
    wildcard_constraints:
        bert_model="bert|bert_silver",
    conda:
        "../envs/train.yaml"
    threads: resources_of("bert_train")["threads"]
    resources:
        mem_mb=resources_of("bert_train")["mem_mb"],
        runtime=resources_of("bert_train")["runtime"],
        gpu=resources_of("bert_train")["gpu"],
    params:
        encoder=config["labelers"]["bert"]["encoder"],
        settings=lambda wildcards: stage_settings(
            wildcards, "bert", config["labelers"]["bert"]["train"]
        ),
    script:
        "../workflow/scripts/bert_train.py"


rule predict_bert:
    """Label the test split with the trained BERT-style classifier (and write each label's head logits)."""
    input:
        unpack(lambda wildcards: labeler_model_inputs("bert")),
        reports=rules.ingest.output.reports,
    output:
        results("predictions/bert.parquet"),
        scores=results("predictions/bert_scores.parquet"),
    log:
        logs("predict_bert"),
    benchmark:
        bench("predict_bert")
    conda:
        "../envs/train.yaml"
    threads: resources_of("predict_bert")["threads"]
    resources:
        mem_mb=resources_of("predict_bert")["mem_mb"],
        runtime=resources_of("predict_bert")["runtime"],
        gpu=resources_of("predict_bert")["gpu"],
    params:
        labeler="bert",
        split="test",
    script:
        "../workflow/scripts/predict_model.py"
