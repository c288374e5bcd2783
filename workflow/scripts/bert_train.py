from cxrlabel.labelers.bert import BertSettings, train_bert_on_split
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    settings = BertSettings(**snakemake.params.settings, threads=snakemake.threads)
    train_bert_on_split(snakemake.params.encoder, snakemake.input.reports, snakemake.input.labels, snakemake.output[0], settings)
