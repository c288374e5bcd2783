from cxrlabel.ingest import ingest, write_corpus
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    write_corpus(ingest(snakemake.params.corpus, dict(snakemake.input)), dict(snakemake.output))
