from cxrlabel.labelers.bert import BertSettings, train_bert_on_split
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    settings = BertSettings(**snakemake.params.settings, threads=snakemake.threads)
    encoder = snakemake.input.get("start", snakemake.params.encoder)  # the second stage starts from the first
    inputs = snakemake.input
    train_bert_on_split(encoder, inputs.reports, inputs.labels, snakemake.output[0], settings, inputs.silver, inputs.gold)
